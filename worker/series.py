"""The DICOM tasks' bodies: a series predicted and answered (services.series.run_series), and its results sent
to the PACS (services.dicom_send.run_send), each reporting to its job's record."""

from typing import Any

from services.dicom_send import run_send
from services.series import run_series
from worker.jobs import Reporter
from worker.submit import submit_sends


def run_series_job(reporter: Reporter) -> dict[str, Any]:
    result = run_series(
        reporter.job_id, reporter.params, progress=reporter.progress, check_cancel=reporter.check_cancel
    )
    # Any send without a job (this run's results, or those of an earlier delivery lost before it made one).
    result["send_jobs"] = submit_sends(result["series_id"])
    return result


def run_send_job(reporter: Reporter) -> dict[str, Any]:
    return run_send(reporter.job_id, reporter.params, progress=reporter.progress)

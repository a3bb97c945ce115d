"""The batch prediction task's body: services.batch.run_batch, reporting to the job's record."""

from typing import Any

from services.batch import run_batch
from worker.jobs import Reporter


def run_batch_job(reporter: Reporter) -> dict[str, Any]:
    return run_batch(reporter.job_id, reporter.params, progress=reporter.progress, check_cancel=reporter.check_cancel)

"""The training job: runs the training run attached to a job, reporting progress inside each epoch."""

import time
from typing import Any

from db.runs import get_run, get_run_for_job
from db.session import session_scope
from domain import TrainingStep
from models.data.dataset import DatasetError
from models.data.folders import allowed_folder
from models.nets.mobilenet import MissingWeightsError
from models.training.run_types import TrainingCancelled
from services.training import RunParams, execute_run
from settings import get_settings
from worker.jobs import JobCancelled, Reporter, UserError

# The cancel flag is read from the DB at most this often: a batch takes far longer, so a cancel is still prompt.
CANCEL_POLL_S = 1.0


def run_training_job(reporter: Reporter) -> dict[str, Any]:
    """Train the job's run; a bad folder or missing weights fails the job with the reason."""
    with session_scope() as session:
        run = get_run_for_job(session=session, job_id=reporter.job_id)
        if run is None:
            raise UserError(f"job {reporter.job_id} has no training run attached")
        run_id, stored = run.id, dict(run.params)
    # Checked again here, not only by the form: a job may come from elsewhere, and links may have moved since.
    roots = list(get_settings().allowed_data_roots)
    try:
        cfg = RunParams.of(stored).config
        for folder in filter(None, (cfg.data_dir, cfg.test_dir)):
            allowed_folder(folder, roots)
    except ValueError as exc:  # DatasetError is one
        raise UserError(str(exc)) from exc
    last_poll = [0.0]
    steps = [0]  # the run's progress steps in all, once known

    def on_progress(epoch: int, epochs: int, batch: int, batches: int) -> None:
        steps[0] = epochs * batches
        reporter.progress((epoch - 1) * batches + batch, steps[0], f"epoch {epoch}/{epochs}, batch {batch}/{batches}")

    def on_step(step: TrainingStep) -> None:
        # The epochs are over (early stopping may end them before the last planned one): the bar is full, and
        # the message names the step under way.
        reporter.progress(steps[0], steps[0], step.message)

    def should_cancel() -> bool:
        if time.monotonic() - last_poll[0] < CANCEL_POLL_S:
            return False
        last_poll[0] = time.monotonic()
        try:
            reporter.check_cancel()
        except JobCancelled:
            return True
        return False

    try:
        result = execute_run(run_id, on_progress=on_progress, should_cancel=should_cancel, on_step=on_step)
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    except (DatasetError, MissingWeightsError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    val = result.metrics["val"]
    with session_scope() as session:
        resumed_after = RunParams.of(get_run(session=session, run_id=run_id).params).resumed_after
    return {
        "run_id": run_id,
        "resumed_after": list(resumed_after),
        "best_epoch": result.best_epoch,
        "val_accuracy": val["accuracy"],
        "val_f1": val["f1"],
        "artifact": str(result.best_path),
    }

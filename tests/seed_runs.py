"""Finished training runs written straight into the database, as the recorder leaves them, for tests to read."""

from typing import Any

from db.runs import add_epoch, create_run, end_run, finish_run, start_run
from db.schema import CLASSES
from db.session import session_scope


def metrics(accuracy: float, *, test_accuracy: float | None = None) -> dict[str, Any]:
    """Final figures in the shape the recorder stores them, from one accuracy (the other figures just below it)."""
    report = {
        "accuracy": accuracy,
        "precision": accuracy - 0.01,
        "recall": accuracy - 0.02,
        "f1": accuracy - 0.03,
        "per_class": {c: {"precision": accuracy, "recall": accuracy, "f1": accuracy, "support": 5} for c in CLASSES},
        "confusion_matrix": [[5 if i == j else 0 for j in range(4)] for i in range(4)],
        "labels": list(CLASSES),
        "count": 20,
        "loss": 0.3,
        "inference_ms": 12.5,
        "model_size_mb": 4.2,
        "calibration": {"temperature": 1.4, "ece_before": 0.08, "ece_after": 0.02, "nll_before": 0.5, "nll_after": 0.4},
    }
    result: dict[str, Any] = {"val": report, "peak_memory_mb": 900.0, "best_epoch": 2}
    if test_accuracy is not None:
        result["test"] = {**report, "accuracy": test_accuracy}
    return result


def seed_run(framework: str, accuracy: float | None, *, fingerprint: str = "f" * 64, epochs: int = 2, **kw: Any) -> int:
    """A run as the recorder leaves it: started, with epoch rows, and finished (or failed when accuracy is None)."""
    with session_scope() as session:
        run = create_run(
            session=session,
            framework=framework,
            preset="report",
            params={"epochs": epochs},
            dataset_path="/data/brain",
            pretrained=framework == "keras",
        )
        start_run(session=session, run_id=run.id, dataset_fingerprint=fingerprint)
        for epoch in range(1, epochs + 1):
            add_epoch(
                session=session,
                run_id=run.id,
                epoch=epoch,
                train_loss=1 / epoch,
                train_acc=0.5,
                val_loss=1.2 / epoch,
                val_acc=0.4 + 0.1 * epoch,
                val_precision=0.5,
                val_recall=0.5,
                val_f1=0.5,
                lr=1e-3,
                duration_s=3.0,
                images_per_s=40.0,
            )
        run_id = run.id
    # A new transaction, as the recorder's: the run's start time is read back from the database.
    with session_scope() as session:
        if accuracy is None:
            end_run(session=session, run_id=run_id, status="failed", error="boom")
        else:
            finish_run(
                session=session,
                run_id=run_id,
                metrics=metrics(accuracy, **kw),
                artifact_path="/m.pth",
                artifact_sha256="a" * 64,
            )
    return run_id

"""Training recorded in the database: the same code path for the Celery task and the command line.

python -m services.training --framework torch --data DIR [--preset improved] [--activate]
python -m services.training --resume RUN_ID
"""

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db import runs
from db.session import session_scope
from db.storage import StorageFull, is_disk_full, storage_full
from domain import TrainingStep
from models.cli import add_train_arguments, config_from_args
from models.training.backends import backends
from models.training.config import TrainConfig, make_config
from models.training.run import TrainResult, run_training
from models.training.run_types import TrainHooks, TrainingCancelled
from services.model_files import file_sha256, record_companions
from services.predictors import prepare_export
from settings import get_settings


@dataclass(frozen=True)
class RunParams:
    """A training run's params as its row stores them, parsed once: its config's fields, side by side with these."""

    config: TrainConfig
    use_reviewed: bool = False  # scans clinicians reviewed join the training side, fetched when the run starts
    resumed_after: tuple[int, ...] = ()  # the last epoch of each earlier sitting

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> "RunParams":
        """The params of a run's row; a field the row lacks takes its preset's value. ValueError for a config a run
        cannot use."""
        known = {f.name for f in fields(TrainConfig)} - {"framework", "data_dir", "preset", "extra_items"}
        overrides = {k: v for k, v in params.items() if k in known}
        config = make_config(params["framework"], params["data_dir"], params.get("preset", "report"), **overrides)
        return cls(config, bool(params.get("use_reviewed")), tuple(params.get("resumed_after", ())))

    def stored(self) -> dict[str, Any]:
        """As the row stores them: every config field but the reviewed scans, fetched again when the run starts."""
        params = asdict(self.config)
        params.pop("extra_items")
        params["use_reviewed"] = self.use_reviewed
        if self.resumed_after:
            params["resumed_after"] = list(self.resumed_after)
        return params


def add_recorded_run(
    *,
    session: Session,
    cfg: TrainConfig,
    use_reviewed: bool = False,
    job_id: int | None = None,
    dataset_health: dict[str, Any] | None = None,
) -> int:
    """A queued run in `session`'s transaction, with the dataset check it was started on (see
    services.dataset_health.health_record) beside its config; returns its id."""
    params = RunParams(cfg, use_reviewed=use_reviewed).stored()
    if dataset_health is not None:
        params["dataset_health"] = dataset_health
    run = runs.create_run(
        session=session,
        framework=cfg.framework,
        preset=cfg.preset,
        params=params,
        dataset_path=cfg.data_dir,
        test_path=cfg.test_dir,
        pretrained="pretrained" in backends[cfg.framework].options and cfg.pretrained,
        job_id=job_id,
    )
    return run.id


def create_recorded_run(*, cfg: TrainConfig, use_reviewed: bool = False, job_id: int | None = None) -> int:
    with session_scope() as session:
        return add_recorded_run(session=session, cfg=cfg, use_reviewed=use_reviewed, job_id=job_id)


def _reviewed_items() -> list[tuple[str, str]]:
    """The scans clinicians read, labelled with their current read (not with a model's answer)."""
    from db.reads import read_training_items

    with session_scope() as session:
        return [(str(path), label) for path, label in read_training_items(session=session)]


def execute_run(
    run_id: int,
    *,
    on_progress: Callable[[int, int, int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_step: Callable[[TrainingStep], None] | None = None,
    echo: bool = False,
    activate: bool = False,
) -> TrainResult:
    """Train the run's config, writing every epoch and the final metrics; a failure leaves the run failed.

    `on_step` hears of each step after the last epoch (calibrating, fitting the check, exporting) as it begins.
    """
    step = on_step or (lambda _: None)
    with session_scope() as session:
        run = runs.get_run(session=session, run_id=run_id)
        if run is None:
            raise LookupError(f"training run {run_id} does not exist")
        params = dict(run.params)
    folder = Path(get_settings().artifact_dir)
    try:
        run_params = RunParams.of(params)
        cfg = run_params.config
        if cfg.output_dir == TrainConfig.output_dir:  # not chosen explicitly
            cfg.output_dir = str(folder / "runs" / str(run_id))
        folder = Path(cfg.output_dir)
        if run_params.use_reviewed:
            cfg.extra_items = _reviewed_items()
        resume = _saved_epochs(run_id, cfg, run_params.resumed_after)

        def on_start(info: dict[str, Any]) -> None:
            with session_scope() as session:
                runs.start_run(session=session, run_id=run_id, dataset_fingerprint=info["fingerprint"])
                run = runs.get_run(session=session, run_id=run_id)
                run.pretrained = bool(info["pretrained"])
            if echo:
                print(f"run {run_id}: split {info['split']}", flush=True)

        def on_epoch(row: dict[str, Any]) -> None:
            with session_scope() as session:
                runs.add_epoch(session=session, run_id=run_id, **row)
            if echo:
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)

        hooks = TrainHooks(
            on_start=on_start,
            on_epoch=on_epoch,
            on_progress=on_progress or TrainHooks.on_progress,
            should_cancel=should_cancel or (lambda: False),
            on_step=step,
        )
        result = run_training(cfg, hooks, resume=resume)
    except TrainingCancelled:
        with session_scope() as session:
            runs.end_run(session=session, run_id=run_id, status="cancelled")
        raise
    except Exception as exc:
        failure = _disk_full(exc, folder) or exc
        with session_scope() as session:
            runs.end_run(session=session, run_id=run_id, status="failed", error=f"{type(failure).__name__}: {failure}")
        if failure is not exc:
            raise failure from exc
        raise
    sha, backend = file_sha256(result.best_path), backends[cfg.framework]
    metrics = None
    if backend.ood_features:
        step(TrainingStep.FITTING_CHECK)
        metrics = {**result.metrics, "ood": fit_ood_check(cfg, result.best_path)}
    with session_scope() as session:
        runs.finish_run(
            session=session,
            run_id=run_id,
            metrics=metrics or result.metrics,
            artifact_path=str(result.best_path),
            artifact_sha256=sha,
            pretrained=result.pretrained,
        )
        runs.register_model_version(
            session=session,
            framework=cfg.framework,
            name=f"run {run_id} · {cfg.preset}",
            artifact_path=result.best_path,
            sha256=sha,
            run_id=run_id,
            activate=activate,
        )
    step(TrainingStep.EXPORTING)
    _export(cfg.framework, result.best_path, sha)
    # Its sidecar, the brain-MRI check's statistics and report were made by this run: their sha256 goes with it.
    record_companions(str(result.best_path), sha)
    return result


def _export(framework: str, model_path: Path, sha256: str) -> None:
    """Make the new model's ONNX exports where it was trained, with the framework already loaded, so that the
    app and the batch workers that predict with it never import the framework to make them. Where that fails
    the model is still good: its first use makes them (or says why it cannot)."""
    try:
        prepare_export(framework, str(model_path), sha256)
    except Exception as exc:  # an exporter's own failure must not fail a run whose model is registered
        print(f"{model_path}: the ONNX export is left to the model's first use: {type(exc).__name__}: {exc}")


def _disk_full(exc: Exception, folder: Path) -> StorageFull | None:
    """A run that filled its disk says so in words (checkpoints are written whole or not at all, see
    models.nets.cnn.save_whole), instead of an errno; None for any other failure."""
    if not (isinstance(exc, OSError) and is_disk_full(exc)):
        return None
    return storage_full(
        folder, "the run stopped without keeping the file it was writing, and can continue from its last saved epoch"
    )


def fit_ood_check(cfg: TrainConfig, model_path: Path) -> dict[str, Any]:
    """Fit the brain-MRI check for a new CNN beside its file, so the version can gate images the day it is
    registered; a summary for the run's metrics, or the reason it could not be fitted (the run still counts)."""
    from models.evaluation.ood import PERCENTILE, fit_command

    try:
        report = fit_command(str(model_path), cfg.data_dir, PERCENTILE, [])
    except Exception as exc:  # the model is good without the check; say why it has none
        return {"error": f"the out-of-distribution check could not be fitted: {type(exc).__name__}: {exc}"}
    return {
        "threshold": report["threshold"],
        "percentile": PERCENTILE,
        "validation_refused": report["validation"]["rate"],
        "families_caught": {name: family["rate"] for name, family in report["families"].items()},
    }


def _saved_epochs(run_id: int, cfg: TrainConfig, resumed_after: tuple[int, ...]) -> bool:
    """Whether the run saved epochs to continue from (a worker died, or a person ran it again).

    Epochs the database missed are recorded now, and the run's params list the epochs it resumed after.
    """
    try:
        state = backends[cfg.framework].load_state(cfg.output_dir)
    except FileNotFoundError:
        return False
    with session_scope() as session:
        for row in state["rows"]:
            runs.add_epoch(session=session, run_id=run_id, **row)
        run = runs.get_run(session=session, run_id=run_id)
        run.params = {**run.params, "resumed_after": [*resumed_after, state["epoch"]]}
    return True


def record_training(
    cfg: TrainConfig, *, output_dir: str | None = None, activate: bool = False, echo: bool = False
) -> TrainResult:
    """The CLI's path: create a run row, then execute it in the foreground."""
    run_id = create_recorded_run(cfg=cfg)
    if output_dir:
        # An explicit folder wins over ARTIFACT_DIR/runs/<id>.
        with session_scope() as session:
            run = runs.get_run(session=session, run_id=run_id)
            run.params = {**run.params, "output_dir": output_dir}
    return execute_run(run_id, echo=echo, activate=activate)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train a model as a run recorded in the database (see the Leaderboard).")
    add_train_arguments(p)
    p.add_argument("--activate", action="store_true", help="make the trained model the active one")
    p.add_argument("--resume", type=int, metavar="RUN_ID", help="continue a recorded run from its last epoch")
    args = p.parse_args(argv)
    if args.resume is not None:
        result = execute_run(args.resume, echo=True, activate=args.activate)
    else:
        cfg = config_from_args(args)
        result = record_training(cfg, output_dir=args.output_dir, activate=args.activate, echo=True)
    print(json.dumps({"best": str(result.best_path), "metrics": result.metrics}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

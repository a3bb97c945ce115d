"""A finished training run turned into a compact model to ship, with the run's record in its sidecar."""

import json
from pathlib import Path
from typing import Any

from models.evaluation.scoring import score
from models.inference.model_meta import write_sidecar
from models.training.backends import backend_for_file
from models.training.config import TrainConfig
from models.training.prepare import prepare_data, prepared_predictor


def export_run(run_dir: str | Path, out: str | Path, *, check: bool = True) -> dict[str, Any]:
    """Write the run's best model to `out` (no optimizer state) and `out`.json with the run's record."""
    run_dir, out = Path(run_dir), Path(out)
    summary = json.loads((run_dir / "run.json").read_text())
    framework = summary["framework"]
    backend = backend_for_file(out)
    if framework != backend.framework:
        raise ValueError(f"{out} does not match the run's framework ({framework})")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = backend.save_compact(run_dir, out)
    if meta:
        write_sidecar(out, meta)  # its predictor reads the preprocessing flags and temperature from it
    summary["shipped_size_mb"] = out.stat().st_size / 1e6
    if check:
        # The compact file must score like the full-precision one on the same validation split.
        cfg_fields = {k: v for k, v in summary["config"].items() if k in TrainConfig.__dataclass_fields__}
        cfg_fields["extra_items"] = []
        data = prepare_data(TrainConfig(**cfg_fields))
        shipped = score(prepared_predictor(framework, out), data.x_val, data.y_val)
        summary["shipped_val_accuracy"] = shipped["accuracy"]
        summary["full_precision_val_accuracy"] = summary["metrics"]["val"]["accuracy"]
    write_sidecar(out, {**meta, "run": summary})
    return summary

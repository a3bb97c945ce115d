"""One backend per framework, registered by domain.Framework (`backends[Framework.TORCH]`): everything that differs
between the CNN and MobileNetV2, from training a model to predicting with it (docs/design/models.md).

No framework is imported here, only in the methods that need one: a worker's parent process imports this module.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from domain import Framework
from models.inference.model_meta import OpenCheck, file_sha256, model_meta, read_sidecar, sidecar_path, write_sidecar
from models.inference.predictor import OnnxPredictor, Predictor
from models.training.config import TrainConfig, framework_of
from models.training.loop import Trainer
from models.training.run_types import PreparedData


@dataclass(frozen=True)
class Backend(ABC):
    framework: Framework
    suffixes: tuple[str, ...]  # of its model files; the first is the one it saves
    ood_features: bool  # its predictor gives the features of the brain-MRI check (models/evaluation/ood.py)
    int8: bool  # it has an int8 ONNX export (ONNX_INT8_CNN)
    offline_preset: str  # a preset that trains where no pretrained weights can be downloaded

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    @property
    def options(self) -> frozenset[str]:
        """The TrainConfig fields only this framework's training reads."""
        return frozenset(option.name for option in fields(TrainConfig) if framework_of(option) == self.framework)

    def owns(self, path: str | Path) -> bool:
        """Whether `path` is a model file of this framework, by its suffix."""
        return str(path).lower().endswith(self.suffixes)

    # Training

    @abstractmethod
    def trainer(self, cfg: TrainConfig, data: PreparedData, *, resume: dict[str, Any] | None = None) -> Trainer:
        """Its training of one run, set up (and restored from `resume`, a state `load_state` read)."""

    @abstractmethod
    def load_state(self, run_dir: str | Path) -> dict[str, Any]:
        """What a run saved after its last finished epoch; FileNotFoundError when it saved nothing."""

    def pretrained_weights(self, cfg: TrainConfig) -> Path | None:
        """The pretrained weights a run starts from, None for none; raises when asked for but absent."""
        return None

    @abstractmethod
    def save_compact(self, run_dir: Path, out: Path) -> dict[str, Any]:
        """Write the run's best model to `out` without optimizer state; returns the sidecar fields it needs ({} for none)."""

    # Prediction

    def load_predictor(
        self,
        path: str | Path,
        *,
        backend: str = "framework",
        sha256: str | None = None,
        threads: int = 1,
        int8: bool = False,
        check: OpenCheck | None = None,
    ) -> Predictor:
        """A predictor for a model file; FileNotFoundError or ValueError with a readable message.

        backend "framework" predicts in torch or TensorFlow; "onnx" on ONNX Runtime with `threads` threads, from
        the export made for the file whose sha256 is `sha256` (hashed now when not given); int8 (where the backend
        has one) with its large Linear layer quantized. `check` sees each export and the sidecar before they are
        used.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        if backend == "onnx":
            if int8 and not self.int8:
                raise ValueError(f"the {self.framework.label} has no int8 export")
            return OnnxPredictor(
                self.framework, path, sha256=sha256 or file_sha256(path), threads=threads, int8=int8, check=check
            )
        if backend != "framework":
            raise ValueError(f"unknown inference backend {backend!r}")
        return self._framework_predictor(path, check)

    @abstractmethod
    def _framework_predictor(self, path: Path, check: OpenCheck | None) -> Predictor:
        """Its predictor in its own framework."""

    def model_meta(self, path: str | Path, check: OpenCheck | None = None) -> dict[str, Any]:
        """tta, config (with crop), temperature, metrics, run...: what the model file and its sidecar say."""
        return model_meta(path, check=check)

    def store_temperature(self, path: str | Path, temperature: float) -> None:
        """Save a fitted temperature with the model, where its predictor reads it."""
        write_sidecar(path, {**read_sidecar(path), "temperature": temperature})

    def make_exports(
        self, path: str | Path, sha256: str, *, threads: int = 1, int8: bool = False, check: OpenCheck | None = None
    ) -> None:
        """Every ONNX export its ONNX predictor opens, made beside the file where missing or stale (`check` sees
        each export's bytes)."""
        from models.inference.onnx_export import make_exports

        make_exports(self.framework, path, sha256, threads=threads, int8=int8, check=check)


class TorchBackend(Backend):
    def trainer(self, cfg: TrainConfig, data: PreparedData, *, resume: dict[str, Any] | None = None) -> Trainer:
        from models.training.torch_loop import TorchTrainer

        return TorchTrainer(cfg, data, resume=resume)

    def load_state(self, run_dir: str | Path) -> dict[str, Any]:
        from models.training.torch_loop import load_state

        return load_state(run_dir)

    def save_compact(self, run_dir: Path, out: Path) -> dict[str, Any]:
        """fp16 weights: the float16 CNN scores as the float32 one."""
        from models.nets.cnn import load_checkpoint, save_checkpoint

        model, ckpt = load_checkpoint(run_dir / "best.pth")
        keep = {k: ckpt[k] for k in ("epoch", "config", "metrics", "tta", "normalize", "temperature") if k in ckpt}
        save_checkpoint(out, model, extra=keep, half=True)
        return {}

    def _framework_predictor(self, path: Path, check: OpenCheck | None) -> Predictor:
        from models.inference.predictor import TorchPredictor

        return TorchPredictor(path, check)

    def model_meta(self, path: str | Path, check: OpenCheck | None = None) -> dict[str, Any]:
        import torch

        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        return model_meta(path, checkpoint=checkpoint, check=check)

    def store_temperature(self, path: str | Path, temperature: float) -> None:
        from models.nets.cnn import update_checkpoint

        update_checkpoint(path, temperature=temperature)
        if sidecar_path(path).is_file():
            # Where a sidecar exists it wins over the checkpoint, so it must hold the new value too.
            super().store_temperature(path, temperature)


class KerasBackend(Backend):
    def trainer(self, cfg: TrainConfig, data: PreparedData, *, resume: dict[str, Any] | None = None) -> Trainer:
        from models.training.keras_loop import KerasTrainer

        return KerasTrainer(cfg, data, resume=resume)

    def load_state(self, run_dir: str | Path) -> dict[str, Any]:
        from models.training.keras_loop import load_state

        return load_state(run_dir)

    def pretrained_weights(self, cfg: TrainConfig) -> Path | None:
        from models.nets.mobilenet import resolve_weights

        return resolve_weights(cfg)

    def save_compact(self, run_dir: Path, out: Path) -> dict[str, Any]:
        import keras

        keras.models.load_model(run_dir / "best.keras", compile=False).save(out)
        return read_sidecar(run_dir / "best.keras")

    def _framework_predictor(self, path: Path, check: OpenCheck | None) -> Predictor:
        from models.inference.predictor import KerasPredictor

        return KerasPredictor(path, check)


backends: dict[Framework, Backend] = {
    Framework.TORCH: TorchBackend(
        Framework.TORCH, (".pth", ".pt"), ood_features=True, int8=True, offline_preset="report"
    ),
    Framework.KERAS: KerasBackend(
        Framework.KERAS, (".keras",), ood_features=False, int8=False, offline_preset="improved"
    ),
}


def backend_for_file(path: str | Path) -> Backend:
    """The backend whose model files end like `path`; ValueError for any other file."""
    for backend in backends.values():
        if backend.owns(path):
            return backend
    names = " or ".join(b.suffix for b in backends.values())
    raise ValueError(f"{path}: not a model file (expected {names})")

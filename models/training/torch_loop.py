"""The custom CNN's training: set-up and resume, one epoch of steps, evaluation and its state (loop.fit runs it)."""

import copy
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from models.data.dataset import class_weights
from models.nets.cnn import ARCH, MEAN, STD, TumorCNN, normalize, predict_proba, save_checkpoint, save_whole
from models.training.config import TrainConfig
from models.training.devices import torch_device
from models.training.loop import EpochTraining
from models.training.run_types import PreparedData, TrainHooks, TrainingCancelled

# (rotation degrees, shift fraction, zoom fraction, shear, brightness/contrast fraction)
AUGMENT = {"moderate": (10.0, 0.05, 0.05, 0.0, 0.1), "high": (20.0, 0.1, 0.15, 0.15, 0.15)}


def augment_batch(x: torch.Tensor, level: str, gen: torch.Generator) -> torch.Tensor:
    """Random flips, affine jitter and brightness/contrast on a float batch in [0, 1], all at once."""
    if level == "none":
        return x
    rot, shift, zoom, shear, bc = AUGMENT[level]
    n = x.shape[0]

    # Drawn from the run's CPU generator wherever the batch is, so a run draws the same on any device.
    def uniform(scale: float) -> torch.Tensor:
        return ((torch.rand(n, generator=gen) * 2 - 1) * scale).to(x.device)

    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    angle = uniform(math.radians(rot))
    scale = 1 + uniform(zoom)
    sh = uniform(shear)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid works in [-1, 1] coordinates, so a shift of f of the width is 2f.
    theta = torch.stack(
        [torch.stack([cos, -sin + sh, uniform(2 * shift)], 1), torch.stack([sin, cos, uniform(2 * shift)], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + uniform(bc))[:, None, None, None] + mean
    x = x * (1 + uniform(bc))[:, None, None, None]
    return x.clamp(0, 1)


def recalibrate_bn(model: nn.Module, images: np.ndarray, *, batch_size: int = 128) -> None:
    """Re-estimate every BatchNorm's running statistics on clean images, with dropout off.

    A cumulative average over the images (momentum None), so the figures do not depend on the last batches.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
            model(normalize(batch.to(device)).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()


def mixup(x: torch.Tensor, alpha: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The batch blended with a shuffled copy of itself: (blend, each row's partner, the weight of the row)."""
    # The weight comes from torch's global generator and the pairing from the run's: both are in the saved
    # state, so a resumed run blends as an uninterrupted one would.
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(x.shape[0], generator=gen).to(x.device)
    lam = max(lam, 1 - lam)  # the row's own image dominates: its label stays the main target
    return lam * x + (1 - lam) * x[partner], partner, lam


def _objective(
    cfg: TrainConfig, criterion: nn.Module, logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None
) -> torch.Tensor:
    """The labels' loss, blended with the teachers' where the run distils them."""
    loss = criterion(logits, y)
    if soft is None:
        return loss
    return (1 - cfg.distill_weight) * loss + cfg.distill_weight * distillation_loss(
        logits, soft, cfg.distill_temperature
    )


def distillation_targets(data: PreparedData, temperature: float) -> torch.Tensor:
    """The teachers' probabilities softened at `temperature`; an image they did not score gets its label."""
    probs = torch.from_numpy(np.asarray(data.soft_train, dtype=np.float32))
    missing = torch.isnan(probs[:, 0])
    probs[missing] = F.one_hot(torch.from_numpy(data.y_train)[missing].long(), probs.shape[1]).float()
    softened = probs.clamp_min(1e-8).log() / temperature
    return softened.softmax(dim=1)


def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² x KL(targets || student at temperature T), averaged over the batch (Hinton et al.'s scaling)."""
    log_student = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(log_student, targets, reduction="batchmean") * temperature**2


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    # Decoupled decay on the weight matrices only: decaying BatchNorm scales and biases only adds noise.
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        # Dropout on a GPU draws from its own generator.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": gen.get_state(),
        "numpy": [int(v) for v in np.random.get_state()[1]] + list(np.random.get_state()[2:4]),
        "python": list(random.getstate()[1]),
    }


def _restore_rng(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gen.set_state(state["generator"])
    *keys, pos, has_gauss = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(keys, dtype=np.uint32), pos, has_gauss, 0.0))
    random.setstate((3, tuple(state["python"]), None))


STATE_FILE = "state.pth"


def initial_weights(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights of cfg.init_from, as float32; ValueError when it was trained on another split.

    A checkpoint from another seed or validation fraction has seen this run's validation images.
    """
    path = Path(str(cfg.init_from))
    if not path.is_file():
        raise ValueError(f"cannot start from {path}: no such file")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("arch") != ARCH:
        raise ValueError(f"cannot start from {path}: it is not a {ARCH} checkpoint")
    theirs = ckpt.get("config") or {}
    for key in ("seed", "val_fraction", "crop", "max_images_per_class"):
        if theirs.get(key) != getattr(cfg, key):
            raise ValueError(
                f"cannot start from {path}: it was trained with {key}={theirs.get(key)!r}, this run uses "
                f"{getattr(cfg, key)!r}; its training images would include this run's validation images"
            )
    return {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Written whole or not at all: a process killed or a disk filled while saving leaves the previous epoch's."""
    save_whole(state, path)


def load_state(run_dir: str | Path) -> dict[str, Any]:
    """The state a CNN run saved after its last finished epoch; FileNotFoundError when there is none."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no resumable CNN run ({STATE_FILE} is missing)")
    return torch.load(path, map_location="cpu", weights_only=True)


class TorchTrainer:
    """The CNN, its optimizer and weight average for one run; `resume` continues a saved state (see `load_state`).

    `state.pth` holds all a later process needs to continue exactly where this one was: weights, optimizer,
    weight average and the random states, beside the loop's progress.
    """

    def __init__(self, cfg: TrainConfig, data: PreparedData, *, resume: dict[str, Any] | None = None) -> None:
        self.cfg, self.data = cfg, data
        self.device = torch_device()
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        model = TumorCNN()
        if cfg.init_from and resume is None:
            model.load_state_dict(initial_weights(cfg))
        self.model = model.to(self.device, memory_format=torch.channels_last)
        weights = torch.tensor(class_weights(data.y_train.tolist()), dtype=torch.float32, device=self.device)
        self.criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
        self.optimizer = _optimizer(cfg, self.model)
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay else None
        )
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            if self.ema is not None:
                self.ema.load_state_dict(resume["ema"])
            _restore_rng(resume["rng"], self.gen)
        self.x_train = torch.from_numpy(data.x_train).permute(0, 3, 1, 2)
        self.y_train = torch.from_numpy(data.y_train)
        self.soft = distillation_targets(data, cfg.distill_temperature).to(self.device) if cfg.distill_from else None
        # Clean training images for the BatchNorm re-estimation: a fixed sample is plenty for a mean and variance.
        self.clean = data.x_train[np.random.default_rng(cfg.seed).permutation(len(data.x_train))[:2048]]
        self.scored: nn.Module | None = None

    def phase(self, epoch: int) -> tuple[float, int]:
        """One phase: the configured learning rate from the first epoch."""
        return self.cfg.lr, 1

    def begin_epoch(self, epoch: int) -> bool:
        return False

    def train_one_epoch(self, epoch: int, lr: float, hooks: TrainHooks) -> EpochTraining:
        cfg, soft = self.cfg, self.soft
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        n = len(self.y_train)
        batches = max(1, math.ceil(n / cfg.batch_size))
        perm = torch.randperm(n, generator=self.gen)
        for b in range(batches):
            if hooks.should_cancel():
                raise TrainingCancelled("cancelled by request")
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if len(idx) < 2:  # BatchNorm1d cannot train on a single sample
                continue
            x = self.x_train[idx].to(self.device, non_blocking=True).float() / 255.0
            x = augment_batch(x, cfg.augment, self.gen)
            x = ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last)
            y = self.y_train[idx].to(self.device, non_blocking=True)
            idx = idx.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            partner, lam = None, 1.0
            if cfg.mixup_alpha > 0:
                x, partner, lam = mixup(x, cfg.mixup_alpha, self.gen)
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device, dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = self.model(x)
            outputs = logits.float()
            loss = _objective(cfg, self.criterion, outputs, y, soft[idx] if soft is not None else None)
            if partner is not None:
                theirs = _objective(
                    cfg, self.criterion, outputs, y[partner], soft[idx[partner]] if soft is not None else None
                )
                loss = lam * loss + (1 - lam) * theirs
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            hooks.on_progress(epoch, cfg.epochs, b + 1, batches)
        return EpochTraining(loss_sum / max(seen, 1), correct / max(seen, 1), seen)

    @contextmanager
    def scored_weights(self) -> Iterator[None]:
        """A copy of the weights that are scored and saved (the average, where there is one) for the block."""
        scored = copy.deepcopy(self.ema.module if self.ema is not None else self.model)
        if self.cfg.recalibrate_bn:
            recalibrate_bn(scored, self.clean)
        elif self.ema is not None:
            # The average holds weights only; its BatchNorm statistics come from the live model.
            for avg, live in zip(scored.buffers(), self.model.buffers()):
                avg.copy_(live)
        self.scored = scored
        try:
            yield
        finally:
            self.scored = None

    def evaluate(self) -> np.ndarray:
        """Validation probabilities of the scored weights."""
        return predict_proba(self.scored, self.data.x_val, tta=self.cfg.tta)

    def save_model(self, path: Path, epoch: int, row: dict[str, Any]) -> None:
        cfg = self.cfg
        extra = {"epoch": epoch, "config": cfg.to_dict(), "metrics": row, "tta": cfg.tta, "normalize": [MEAN, STD]}
        save_checkpoint(path, self.scored.to(memory_format=torch.contiguous_format), extra=extra)

    def save_state(self, out: Path, progress: dict[str, Any]) -> None:
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": _rng_state(self.gen),
        }
        save_state(out / STATE_FILE, {**progress, **payload})

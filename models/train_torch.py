"""The training loop of the custom CNN."""

import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.cnn import MEAN, STD, TumorCNN, predict_proba, save_checkpoint
from models.config import TrainConfig
from models.data import class_weights
from models.schedule import EarlyStopping, LRSchedule
from models.train import PreparedData, TrainHooks, TrainingCancelled, epoch_row

# (rotation degrees, shift fraction, zoom fraction, shear, brightness/contrast fraction)
AUGMENT = {"moderate": (10.0, 0.05, 0.05, 0.0, 0.1), "high": (20.0, 0.1, 0.15, 0.15, 0.15)}


def augment_batch(x: torch.Tensor, level: str, gen: torch.Generator) -> torch.Tensor:
    """Random flips, affine jitter and brightness/contrast on a float batch in [0, 1], all at once."""
    if level == "none":
        return x
    rot, shift, zoom, shear, bc = AUGMENT[level]
    n = x.shape[0]

    def uniform(scale: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * scale

    flip = torch.rand(n, generator=gen) < 0.5
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


class WeightAverage:
    """Exponential moving average of the weights, with BatchNorm statistics taken from the live model.

    The decay ramps up over the first steps so that a short run is not averaged into its random start.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for avg, live in zip(self.module.parameters(), model.parameters()):
            avg.mul_(d).add_(live, alpha=1 - d)
        for avg, live in zip(self.module.buffers(), model.buffers()):
            avg.copy_(live)


def train_torch(cfg: TrainConfig, data: PreparedData, hooks: TrainHooks) -> tuple[Path, Path, int]:
    """Train the CNN; returns (best checkpoint, last checkpoint, best epoch)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    model = TumorCNN()
    weights = torch.tensor(class_weights(data.y_train.tolist()), dtype=torch.float32)
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    schedule, stopper = LRSchedule(cfg, cfg.lr), EarlyStopping(cfg.early_stop_patience)
    x_train = torch.from_numpy(data.x_train).permute(0, 3, 1, 2)
    y_train = torch.from_numpy(data.y_train)
    n = len(y_train)
    batches = max(1, math.ceil(n / cfg.batch_size))
    best_acc, best_epoch = -1.0, 0
    best_path, last_path = out / "best.pth", out / "last.pth"
    for epoch in range(1, cfg.epochs + 1):
        lr = schedule.at_epoch_start(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        perm = torch.randperm(n, generator=gen)
        for b in range(batches):
            if hooks.should_cancel():
                raise TrainingCancelled("cancelled by request")
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if len(idx) < 2:  # BatchNorm1d cannot train on a single sample
                continue
            x = augment_batch(x_train[idx].float() / 255.0, cfg.augment, gen)
            x = (x - MEAN) / STD
            y = y_train[idx]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(x)
                loss = criterion(logits.float(), y)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model)
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            hooks.on_progress(epoch, cfg.epochs, b + 1, batches)
        train_time = time.perf_counter() - started
        scored = ema.module if ema is not None else model
        row = epoch_row(
            epoch=epoch, probs=predict_proba(scored, data.x_val, tta=cfg.tta), y_val=data.y_val,
            train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1), lr=lr,
            images=seen, started=started, train_time=train_time,
        )  # fmt: skip
        val_loss = row["val_loss"]
        extra = {"epoch": epoch, "config": cfg.to_dict(), "metrics": row, "tta": cfg.tta, "normalize": [MEAN, STD]}
        save_checkpoint(last_path, scored, extra={**extra, "optimizer": optimizer.state_dict()})
        if row["val_acc"] > best_acc:
            best_acc, best_epoch = row["val_acc"], epoch
            save_checkpoint(best_path, scored, extra=extra)
        hooks.on_epoch(row)
        schedule.at_epoch_end(val_loss)
        if stopper.should_stop(val_loss):
            break
    return best_path, last_path, best_epoch


"""The report's custom 3-block CNN for 224x224 RGB input, and its checkpoint format."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from domain import CLASSES
from models.data.files import write_whole

ARCH = "cnn3-224"
# Pixels are scaled to [0, 1] and then centred; the same constants at training and prediction time.
MEAN, STD = 0.5, 0.5
# The length of feature_summary's vector: channel means and spreads of the three blocks, and the penultimate layer.
FEATURES = 2 * (16 + 32 + 64) + 256


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c_out), nn.MaxPool2d(2), nn.Dropout(0.2)]


class TumorCNN(nn.Module):
    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(*_block(3, 16), *_block(16, 32), *_block(32, 64))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 28 * 28, 256),
            nn.BatchNorm1d(256),
            nn.Dropout(0.4),
            nn.Linear(256, num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def normalize(batch_uint8: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W uint8 (or float in [0, 255]) to the network's input scale."""
    return (batch_uint8.float() / 255.0 - MEAN) / STD


def save_checkpoint(path: str | Path, model: nn.Module, *, extra: dict[str, Any], half: bool = False) -> Path:
    """A checkpoint dict (model, config, metrics...); half=True stores weights as fp16 to halve the file."""
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_whole({"arch": ARCH, "classes": list(CLASSES), "model": state, **extra}, path)
    return path


def save_whole(obj: dict[str, Any], path: Path) -> None:
    """torch.save, written whole or not at all (models/data/files.py)."""
    # Through a Python file, not a path: torch's own writer reports a full disk only as an unexplained
    # RuntimeError ("unexpected pos ..."), a file's write raises the OSError with its errno.
    write_whole(path, lambda handle: torch.save(obj, handle))


def update_checkpoint(path: str | Path, **fields: Any) -> None:
    """Set fields of a saved checkpoint (e.g. its temperature), keeping the weights as they are."""
    path = Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    save_whole({**ckpt, **fields}, path)


def load_checkpoint(path: str | Path) -> tuple[TumorCNN, dict[str, Any]]:
    """The model in eval mode (fp32) and the checkpoint's other fields."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("arch") != ARCH:
        raise ValueError(f"{path} is not a {ARCH} checkpoint")
    model = TumorCNN(len(ckpt["classes"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    model.eval()
    return model, ckpt


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, *, tta: bool = False, batch_size: int = 128) -> np.ndarray:
    """Class probabilities for N x 224 x 224 x 3 uint8 images; tta averages with the mirrored image."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
        x = normalize(batch.to(device))
        probs = torch.softmax(model(x), dim=1)
        if tta:
            probs = (probs + torch.softmax(model(x.flip(3)), dim=1)) / 2
        out.append(probs.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), dtype=np.float32)


# The heatmap's map: the last block's ReLU output (64 x 56 x 56), the finest map that still sees whole structures;
# after it come that block's BatchNorm2d and MaxPool2d.
CAM_LAYER = 11


def forward_parts(model: TumorCNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """One eval forward pass: the logits, feature_summary's vector, and the outputs of the layers CAM_LAYER
    (ReLU) and CAM_LAYER + 1 (BatchNorm2d) that the heatmap is made of."""
    h, parts, kept = x, [], []
    for i, layer in enumerate(model.features):
        h = layer(h)
        if isinstance(layer, nn.BatchNorm2d):
            parts += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        if CAM_LAYER <= i <= CAM_LAYER + 1:
            kept.append(h)
    penultimate = model.head[:-1](h)
    parts.append(penultimate)
    return model.head[-1](penultimate), torch.cat(parts, dim=1), kept


def logits_and_features(model: TumorCNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass of normalised N x 3 x 224 x 224 input: the logits, and feature_summary's N x 480 vector.

    Traceable, so the ONNX export (models/inference/onnx_export.py) computes both in the one graph.
    """
    logits, features, _ = forward_parts(model, x)
    return logits, features


def _bn_scale(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> torch.Tensor:
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def class_gradients(model: TumorCNN) -> torch.Tensor:
    """classes x 64 x 28 x 28: each logit's gradient with respect to the last max-pool's output, the same for
    every image, because at eval the head (Flatten, Linear, BatchNorm1d, Dropout, Linear) is affine."""
    flatten, first, bn, _, last = model.head
    with torch.no_grad():
        channels = model.features[CAM_LAYER - 1].out_channels
        side = int(round((first.in_features // channels) ** 0.5))
        return ((last.weight * _bn_scale(bn)) @ first.weight).reshape(-1, channels, side, side)


def hirescam(kept: list[torch.Tensor], logits: torch.Tensor, model: TumorCNN, gradients: torch.Tensor) -> torch.Tensor:
    """N x 56 x 56 HiResCAM of each image's predicted class, without autograd: what models/inference/predictor.py's
    TorchPredictor.heatmap computes with it, from `forward_parts`'s kept outputs and `class_gradients`.

    After the ReLU come BatchNorm2d (a_k x + b_k per channel), MaxPool2d and the affine head, so the gradient of
    logit c at the ReLU's (k, i, j) is a_k G_c[k, i // 2, j // 2] where (i, j) is the position its 2 x 2 window's
    maximum was taken from (the first one where several are equal, as in a flat background, like autograd),
    0 elsewhere. HiResCAM sums gradient times activation over the channels. Traceable, so the ONNX export
    computes the heatmap in the graph.
    """
    act, normed = kept
    pool = model.features[CAM_LAYER + 2]
    _, taken = nn.functional.max_pool2d(normed, pool.kernel_size, pool.stride, return_indices=True)
    scale = _bn_scale(model.features[CAM_LAYER + 1]).reshape(1, -1, 1, 1)
    routed = (gradients[logits.argmax(1)] * scale).flatten(2)
    grad = torch.zeros_like(act).flatten(2).scatter(2, taken.flatten(2), routed)
    return (grad.reshape(act.shape) * act).sum(1)


@torch.no_grad()
def feature_summary(model: TumorCNN, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """N x 480 float32 for N x 224 x 224 x 3 uint8 images: what the out-of-distribution check (models/evaluation/ood.py)
    measures.

    Per image, the mean and the spread of every channel after each block's BatchNorm (2 x (16 + 32 + 64)), then
    the 256 penultimate values. The block statistics tell a blank, noisy, coloured or textual picture from a
    slice; the penultimate values tell a slice of another kind (a head CT) from the ones the classes were
    learned on. One forward pass, without the mirrored copy.
    """
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2))
        out.append(logits_and_features(model, x)[1].numpy())
    return np.concatenate(out) if out else np.zeros((0, FEATURES), dtype=np.float32)

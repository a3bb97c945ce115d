"""Where a run trains: a CUDA GPU where the framework sees one, else the CPU (TRAIN_DEVICE=cpu keeps it there)."""

import os
from typing import Any


def wanted() -> str:
    value = os.environ.get("TRAIN_DEVICE", "auto").strip().lower() or "auto"
    if value not in ("auto", "cpu", "cuda"):
        raise ValueError(f"TRAIN_DEVICE={value!r}: use auto, cpu or cuda")
    return value


def torch_device() -> str:
    """ "cuda" where PyTorch sees a CUDA GPU (and TRAIN_DEVICE is not cpu), else "cpu"; ValueError where cuda is
    asked for and there is none."""
    import torch

    choice = wanted()
    if choice == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if choice == "cuda":
        raise ValueError("TRAIN_DEVICE=cuda, but PyTorch sees no CUDA GPU (the CPU build of torch has none)")
    return "cpu"


def keras_devices() -> list[str]:
    """The GPUs TensorFlow will train on (none with tensorflow-cpu, or with TRAIN_DEVICE=cpu, which hides them)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if wanted() == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
        return []
    if wanted() == "cuda" and not gpus:
        raise ValueError("TRAIN_DEVICE=cuda, but TensorFlow sees no GPU (tensorflow-cpu has none: see the README)")
    return [gpu.name for gpu in gpus]


def describe(framework: str) -> dict[str, Any]:
    """What a run record says of the device it trained on."""
    if framework == "torch":
        import torch

        device = torch_device()
        name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
        return {"device": device, "name": name}
    gpus = keras_devices()
    return {"device": "cuda" if gpus else "cpu", "name": ", ".join(gpus) or "CPU"}

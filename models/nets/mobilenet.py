"""The report's MobileNetV2 transfer model in Keras 3: building, weights and prediction."""

from pathlib import Path
from typing import Protocol

import numpy as np

from domain import CLASSES

BASE_NAME = "mobilenetv2_base"


class NetConfig(Protocol):
    """What building the network and finding its ImageNet weights read of a training config."""

    image_size: int
    weight_decay: float
    pretrained: bool
    weights_path: str | None


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were asked for and none are on this machine."""


def weights_file_name(size: int) -> str:
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5"


def resolve_weights(cfg: NetConfig) -> Path | None:
    """The ImageNet no-top weights file to start from, None for random init; raises when asked for but absent."""
    if not cfg.pretrained:
        return None
    from settings import get_settings

    configured = cfg.weights_path or get_settings().mobilenet_weights_path
    candidates = [Path(configured)] if configured else []
    candidates.append(Path.home() / ".keras" / "models" / weights_file_name(cfg.image_size))
    for path in candidates:
        if path.is_file():
            return path
    raise MissingWeightsError(
        "MobileNetV2 ImageNet weights were not found (looked at "
        + ", ".join(str(p) for p in candidates)
        + "). This machine cannot download them. Copy "
        + weights_file_name(cfg.image_size)
        + " into ~/.keras/models/ or set MOBILENET_WEIGHTS_PATH to the file, or train with pretrained weights"
        " turned off (random initialisation)."
    )


def augmenter(level: str, seed: int):  # -> keras.Sequential | None
    """Training-time augmentation, applied in the input pipeline so the saved model holds none of it."""
    import keras

    if level == "none":
        return None
    if level == "moderate":
        layers = [
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomRotation(10 / 360),
            keras.layers.RandomZoom(0.05),
        ]
        return keras.Sequential(layers, name="augment")
    layers = [
        keras.layers.RandomFlip("horizontal_and_vertical"),
        keras.layers.RandomRotation(20 / 360),
        keras.layers.RandomShear(x_factor=0.15, y_factor=0.15),
        keras.layers.RandomZoom(0.15),
        keras.layers.RandomTranslation(0.1, 0.1),
    ]
    for i, layer in enumerate(layers):
        layer.seed_generator = keras.random.SeedGenerator(seed + i)
    return keras.Sequential(layers, name="augment")


def build_model(cfg: NetConfig, weights: Path | None, num_classes: int = len(CLASSES)):  # -> keras.Model
    """Raw 0-255 RGB pixels in; resizing and MobileNetV2's scaling happen inside the model."""
    import keras

    size = cfg.image_size
    inputs = keras.Input((None, None, 3), name="pixels")
    x = keras.layers.Resizing(size, size, name="resize")(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(x)  # MobileNetV2 expects [-1, 1]
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=str(weights) if weights else None, name=BASE_NAME
    )
    # A pretrained base runs in inference mode so its BatchNorm statistics survive fine-tuning; a random
    # one has no statistics yet and must learn them.
    if not weights:
        # Keras builds MobileNetV2 with BatchNorm momentum 0.999, meant for fine-tuning: from scratch, a few
        # thousand steps leave the moving statistics far from the real ones and inference collapses to one
        # class. 0.9 lets them follow the weights within an epoch.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    x = base(x, training=False) if weights else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    reg = keras.regularizers.l2(cfg.weight_decay)
    x = keras.layers.Dense(128, activation="relu", kernel_regularizer=reg, name="dense")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=reg, name="probs")(x)
    return keras.Model(inputs, outputs, name="mobilenetv2_tumor")


def set_trainable_top(model, top_layers: int, freeze_batchnorm: bool) -> None:
    """Freeze the base except its top `top_layers` layers; BatchNorm stays frozen when asked."""
    import keras

    base = model.get_layer(BASE_NAME)
    base.trainable = True
    cut = max(0, len(base.layers) - top_layers)
    for i, layer in enumerate(base.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= cut and not (is_bn and freeze_batchnorm)


def freeze_base(model) -> None:
    model.get_layer(BASE_NAME).trainable = False


def load_model(path: str | Path):  # -> keras.Model
    import keras

    return keras.models.load_model(path, compile=False)


def predict_proba(model, images: np.ndarray, *, tta: bool = False, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for N x H x W x 3 uint8 images."""
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].astype(np.float32)
        # predict_on_batch runs a compiled graph: several times faster on CPU than an eager call of the model.
        probs = np.asarray(model.predict_on_batch(x))
        if tta:
            probs = (probs + np.asarray(model.predict_on_batch(x[:, :, ::-1, :].copy()))) / 2
        out.append(probs)
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), dtype=np.float32)

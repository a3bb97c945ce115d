"""MobileNetV2's training: a frozen base, then fine-tuning of its top; set-up and resume, one epoch of steps,
evaluation and its state (loop.fit runs it)."""

import json
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from domain import CLASSES
from models.data.dataset import class_weights
from models.inference.model_meta import write_sidecar
from models.nets.mobilenet import (
    augmenter,
    build_model,
    freeze_base,
    predict_proba,
    resolve_weights,
    set_trainable_top,
)
from models.training.config import TrainConfig
from models.training.loop import EpochTraining
from models.training.run_types import PreparedData, TrainHooks, TrainingCancelled


def _compile(model, lr: float, label_smoothing: float) -> None:  # type: ignore[no-untyped-def]
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr, beta_1=0.9, beta_2=0.999),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def _progress_callback(hooks: TrainHooks, epoch: int, epochs: int, batches: int):  # type: ignore[no-untyped-def]
    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            hooks.on_progress(epoch, epochs, batch + 1, batches)
            if hooks.should_cancel():
                raise TrainingCancelled("cancelled by request")

    return Progress()


STATE_FILE = "state.json"


# The model with its optimizer and the loop's state are two files; two slots, written in turn, each with
# its state written last, mean a process killed while saving always leaves one complete epoch behind.
SLOTS = ("resume-a", "resume-b")


def load_state(run_dir: str | Path) -> dict[str, Any]:
    """What a MobileNetV2 run saved after its last finished epoch, with "model_path" to resume from."""
    states = []
    for slot in SLOTS:
        path = Path(run_dir) / slot / STATE_FILE
        if path.is_file():
            states.append({**json.loads(path.read_text()), "model_path": str(path.parent / "model.keras")})
    if not states:
        raise FileNotFoundError(f"{run_dir} holds no resumable MobileNetV2 run (no {STATE_FILE})")
    return max(states, key=lambda st: st["epoch"])


def _save_state(out: Path, model: Any, state: dict[str, Any], average: "WeightAverage | None") -> None:
    slot = out / SLOTS[state["epoch"] % 2]
    slot.mkdir(exist_ok=True)
    (slot / STATE_FILE).unlink(missing_ok=True)
    model.save(slot / "model.keras")
    if average is not None:
        average.save(slot)
    tmp = slot / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, default=float))
    tmp.replace(slot / STATE_FILE)


class WeightAverage:
    """An exponential moving average of the model's trainable weights, updated after every training step in
    one compiled graph; `swap()` exchanges it with the weights (a second call undoes it).

    The decay grows with the number of steps, min(decay, (1 + n) / (10 + n)), as TensorFlow's
    ExponentialMovingAverage does with num_updates: the average never drags the random initial weights along.
    """

    FILE = "ema.npz"

    def __init__(self, model: Any, decay: float) -> None:
        import tensorflow as tf

        self.variables = list(model.trainable_variables)
        self.averages = [tf.Variable(v.numpy(), trainable=False) for v in self.variables]
        self.steps = tf.Variable(0.0, trainable=False, dtype=tf.float32)

        @tf.function
        def update() -> None:
            self.steps.assign_add(1.0)
            rate = tf.minimum(decay, (1.0 + self.steps) / (10.0 + self.steps))
            for var, avg in zip(self.variables, self.averages):
                avg.assign(rate * avg + (1.0 - rate) * tf.cast(var.value, avg.dtype))

        self._update = update

    def callback(self):  # type: ignore[no-untyped-def]
        import keras

        average = self

        class Update(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                average._update()

        return Update()

    def swap(self) -> None:
        for var, avg in zip(self.variables, self.averages):
            current = var.numpy()
            var.assign(avg.numpy())
            avg.assign(current)

    def save(self, folder: Path) -> None:
        arrays = {f"arr_{i}": avg.numpy() for i, avg in enumerate(self.averages)}
        np.savez(folder / self.FILE, steps=self.steps.numpy(), **arrays)

    def load(self, folder: Path) -> None:
        with np.load(folder / self.FILE) as saved:
            self.steps.assign(saved["steps"])
            for i, avg in enumerate(self.averages):
                avg.assign(saved[f"arr_{i}"])


RECALIBRATION_IMAGES = 1024


def recalibrate_bn(model: Any, images: np.ndarray, *, batch_size: int = 64) -> None:
    """Re-estimate every BatchNorm's moving statistics for the current weights (the average's, when scored) as
    a cumulative average over clean training images: the statistics gathered during training belong to
    weights that no longer exist, which makes a from-scratch network's validation swing from epoch to epoch."""
    import keras

    bns = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in bns]
    for k, start in enumerate(range(0, len(images), batch_size)):
        for layer in bns:
            layer.momentum = k / (k + 1)  # moving = k/(k+1) * moving + 1/(k+1) * this batch: a plain mean
        model(images[start : start + batch_size].astype(np.float32), training=True)
    for layer, momentum in zip(bns, momenta):
        layer.momentum = momentum


def _reseed(model: Any, seed: int) -> None:
    """Start every random layer of the model (dropout) from a seed of the epoch's own, as a resumed run will."""
    for i, layer in enumerate(model._flatten_layers()):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            generator.state.assign(np.array([seed + i, 0], dtype=generator.state.dtype))


class KerasTrainer:
    """MobileNetV2 with its optimizer and weight average for one run; `resume` continues a saved state.

    Every epoch draws its randomness from seeds derived from its number, so a resumed run goes on as the
    uninterrupted one would. A resume slot holds the model with its optimizer (`model.keras`), the weight average
    and the loop's progress.
    """

    def __init__(self, cfg: TrainConfig, data: PreparedData, *, resume: dict[str, Any] | None = None) -> None:
        import keras

        self.cfg, self.data = cfg, data
        keras.utils.set_random_seed(cfg.seed)
        weights = resolve_weights(cfg)
        self.pretrained = weights is not None
        self.sample_w = np.asarray(class_weights(data.y_train.tolist()), dtype=np.float32)[data.y_train]
        self.y_onehot = np.eye(len(CLASSES), dtype=np.float32)[data.y_train]
        self.average: WeightAverage | None = None
        if resume is not None:
            # The saved model holds the trainable flags of its phase and the optimizer's state.
            self.model = keras.models.load_model(resume["model_path"])
            if cfg.ema_decay > 0 and resume["epoch"] >= cfg.fine_tune_epoch:
                self.average = WeightAverage(self.model, cfg.ema_decay)
                self.average.load(Path(resume["model_path"]).parent)
        else:
            self.model = build_model(cfg, weights)
            if cfg.fine_tune_epoch <= 1:
                self._fine_tune()
            else:
                freeze_base(self.model)
                _compile(self.model, cfg.lr, cfg.label_smoothing)
        self.meta = {"tta": cfg.tta, "classes": list(CLASSES), "config": cfg.to_dict(), "pretrained": self.pretrained}

    def _fine_tune(self) -> None:
        cfg = self.cfg
        set_trainable_top(self.model, cfg.fine_tune_layers, freeze_batchnorm=self.pretrained)
        _compile(self.model, cfg.fine_tune_lr, cfg.label_smoothing)
        self.average = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    def phase(self, epoch: int) -> tuple[float, int]:
        """The learning rate of the phase an epoch belongs to, and that phase's first epoch."""
        if epoch >= self.cfg.fine_tune_epoch:
            return self.cfg.fine_tune_lr, self.cfg.fine_tune_epoch
        return self.cfg.lr, 1

    def begin_epoch(self, epoch: int) -> bool:
        # Not keras.utils.set_random_seed: a new TensorFlow seed makes every compiled function trace again. Its
        # random ops take their seeds explicitly (the shuffle, the augmentation, the dropout layers below).
        random.seed(self.cfg.seed + epoch)
        np.random.seed(self.cfg.seed + epoch)
        _reseed(self.model, self.cfg.seed + 1000 * epoch)
        if epoch == self.cfg.fine_tune_epoch and epoch > 1:
            # Phase 2: a recompile is needed for the change of `trainable` to take effect.
            self._fine_tune()
            return True
        return False

    def train_one_epoch(self, epoch: int, lr: float, hooks: TrainHooks) -> EpochTraining:
        import tensorflow as tf

        cfg, data = self.cfg, self.data
        self.model.optimizer.learning_rate.assign(lr)
        augment = augmenter(cfg.augment, cfg.seed + 1000 * epoch)

        def to_inputs(x, y, w, augment=augment):  # type: ignore[no-untyped-def]
            x = tf.cast(x, tf.float32)
            return (augment(x, training=True) if augment is not None else x), y, w

        ds = (
            tf.data.Dataset.from_tensor_slices((data.x_train, self.y_onehot, self.sample_w))
            .shuffle(len(self.y_onehot), seed=cfg.seed + epoch)
            .batch(cfg.batch_size)
            .map(to_inputs)
            .prefetch(2)
        )
        batches = max(1, math.ceil(len(data.y_train) / cfg.batch_size))
        callbacks = [_progress_callback(hooks, epoch, cfg.epochs, batches)]
        if self.average is not None:
            callbacks.insert(0, self.average.callback())
        history = self.model.fit(ds, epochs=1, verbose=0, callbacks=callbacks)
        return EpochTraining(history.history["loss"][0], history.history["accuracy"][0], len(data.y_train))

    @contextmanager
    def scored_weights(self) -> Iterator[None]:
        """The weight average in the model (BatchNorm re-estimated for it where asked) for the block; training goes
        on from the raw weights after it."""
        if self.average is not None:
            self.average.swap()
        try:
            if self.cfg.recalibrate_bn:
                # Spread over the whole (class-ordered) training set, so every class is in the statistics.
                x = self.data.x_train
                spread = np.linspace(0, len(x) - 1, min(RECALIBRATION_IMAGES, len(x))).astype(int)
                recalibrate_bn(self.model, x[spread])
            yield
        finally:
            if self.average is not None:
                self.average.swap()

    def evaluate(self) -> np.ndarray:
        """Validation probabilities of the scored weights."""
        return predict_proba(self.model, self.data.x_val, tta=self.cfg.tta)

    def save_model(self, path: Path, epoch: int, row: dict[str, Any]) -> None:
        self.model.save(path)
        write_sidecar(path, {**self.meta, "epoch": epoch, "metrics": row})

    def save_state(self, out: Path, progress: dict[str, Any]) -> None:
        _save_state(out, self.model, progress, self.average)

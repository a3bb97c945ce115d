"""The training loop of the MobileNetV2 transfer model: frozen base, then fine-tuning of its top."""

import json
import math
import shutil
import time
from dataclasses import asdict
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
from models.training.run_types import PreparedData, TrainHooks, TrainingCancelled, epoch_row
from models.training.schedule import EarlyStopping, LRSchedule


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


def train_keras(
    cfg: TrainConfig, data: PreparedData, hooks: TrainHooks, *, resume: dict[str, Any] | None = None
) -> tuple[Path, Path, int]:
    """Train MobileNetV2; returns (best model file, last model file, best epoch).

    After every epoch `last.keras` (weights and optimizer) and `state.json` (schedule, early stopping, best
    epoch, the split) hold what a later process needs to continue; every epoch draws its randomness from
    seeds derived from its number, so a resumed run goes on as the uninterrupted one would.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    weights = resolve_weights(cfg)
    pretrained = weights is not None
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    best_path, last_path = out / "best.keras", out / "last.keras"
    sample_w = np.asarray(class_weights(data.y_train.tolist()), dtype=np.float32)[data.y_train]
    y_onehot = np.eye(len(CLASSES), dtype=np.float32)[data.y_train]
    batches = max(1, math.ceil(len(data.y_train) / cfg.batch_size))

    def fine_tune() -> None:
        nonlocal average
        set_trainable_top(model, cfg.fine_tune_layers, freeze_batchnorm=pretrained)
        _compile(model, cfg.fine_tune_lr, cfg.label_smoothing)
        average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    def phase_of(epoch: int) -> tuple[LRSchedule, int]:
        """The schedule of the phase an epoch belongs to, and that phase's first epoch."""
        if epoch >= cfg.fine_tune_epoch:
            return LRSchedule(cfg, cfg.fine_tune_lr), cfg.fine_tune_epoch
        return LRSchedule(cfg, cfg.lr), 1

    average: WeightAverage | None = None
    first_epoch, best_acc, best_epoch, rows = 1, -1.0, 0, []
    stopper = EarlyStopping(cfg.early_stop_patience)
    if resume is not None:
        # The saved model holds the trainable flags of its phase and the optimizer's state.
        model = keras.models.load_model(resume["model_path"])
        if cfg.ema_decay > 0 and resume["epoch"] >= cfg.fine_tune_epoch:
            average = WeightAverage(model, cfg.ema_decay)
            average.load(Path(resume["model_path"]).parent)
        first_epoch = cfg.epochs + 1 if resume["stopped_early"] else resume["epoch"] + 1
        best_acc, best_epoch, rows = resume["best_acc"], resume["best_epoch"], list(resume["rows"])
        schedule, phase_start = phase_of(resume["epoch"])
        schedule.restore(resume["schedule"])
        stopper = EarlyStopping(**resume["stopper"])
    else:
        model = build_model(cfg, weights)
        if cfg.fine_tune_epoch <= 1:
            fine_tune()
        else:
            freeze_base(model)
            _compile(model, cfg.lr, cfg.label_smoothing)
        schedule, phase_start = phase_of(1)
    meta = {"tta": cfg.tta, "classes": list(CLASSES), "config": cfg.to_dict(), "pretrained": pretrained}
    for epoch in range(first_epoch, cfg.epochs + 1):
        keras.utils.set_random_seed(cfg.seed + epoch)
        _reseed(model, cfg.seed + 1000 * epoch)
        if epoch == cfg.fine_tune_epoch and epoch > 1:
            # Phase 2: a recompile is needed for the change of `trainable` to take effect.
            fine_tune()
            schedule, phase_start = phase_of(epoch)
            stopper = EarlyStopping(cfg.early_stop_patience)
        lr = schedule.at_epoch_start(epoch, first_epoch=phase_start)
        model.optimizer.learning_rate.assign(lr)
        augment = augmenter(cfg.augment, cfg.seed + 1000 * epoch)

        def to_inputs(x, y, w, augment=augment):  # type: ignore[no-untyped-def]
            x = tf.cast(x, tf.float32)
            return (augment(x, training=True) if augment is not None else x), y, w

        ds = (
            tf.data.Dataset.from_tensor_slices((data.x_train, y_onehot, sample_w))
            .shuffle(len(y_onehot), seed=cfg.seed + epoch)
            .batch(cfg.batch_size)
            .map(to_inputs)
            .prefetch(2)
        )
        callbacks = [_progress_callback(hooks, epoch, cfg.epochs, batches)]
        if average is not None:
            callbacks.insert(0, average.callback())
        started = time.perf_counter()
        history = model.fit(ds, epochs=1, verbose=0, callbacks=callbacks)
        train_time = time.perf_counter() - started
        if average is not None:
            average.swap()  # what is scored and saved for inference is the weight average
        if cfg.recalibrate_bn:
            # Spread over the whole (class-ordered) training set, so every class is in the statistics.
            spread = np.linspace(0, len(data.x_train) - 1, min(RECALIBRATION_IMAGES, len(data.x_train))).astype(int)
            recalibrate_bn(model, data.x_train[spread])
        row = epoch_row(
            epoch=epoch,
            probs=predict_proba(model, data.x_val, tta=cfg.tta),
            y_val=data.y_val,
            train_loss=history.history["loss"][0],
            train_acc=history.history["accuracy"][0],
            lr=lr,
            images=len(data.y_train),
            started=started,
            train_time=train_time,
        )
        val_loss = row["val_loss"]
        model.save(last_path)
        write_sidecar(last_path, {**meta, "epoch": epoch, "metrics": row})
        if row["val_acc"] > best_acc:
            best_acc, best_epoch = row["val_acc"], epoch
            shutil.copyfile(last_path, best_path)
            write_sidecar(best_path, {**meta, "epoch": epoch, "metrics": row})
        if average is not None:
            average.swap()  # training goes on from the raw weights
        stop = stopper.should_stop(val_loss)
        schedule.at_epoch_end(val_loss)
        rows.append(row)
        state = {
            "epoch": epoch,
            "config": asdict(cfg),
            "split": data.split_digest,
            "schedule": schedule.state(),
            "stopper": asdict(stopper),
            "best_acc": best_acc,
            "best_epoch": best_epoch,
            "rows": rows,
            "stopped_early": stop,
        }
        _save_state(out, model, state, average)
        hooks.on_epoch(row)
        if stop:
            break
    return best_path, last_path, best_epoch

"""The training loop of the MobileNetV2 transfer model: frozen base, then fine-tuning of its top."""

import math
import shutil
import time
from pathlib import Path

import numpy as np

from models.config import TrainConfig
from models.data import CLASSES, class_weights
from models.mobilenet import augmenter, build_model, freeze_base, predict_proba, resolve_weights, set_trainable_top, write_meta
from models.schedule import EarlyStopping, LRSchedule
from models.train import PreparedData, TrainHooks, TrainingCancelled, epoch_row


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


def train_keras(cfg: TrainConfig, data: PreparedData, hooks: TrainHooks) -> tuple[Path, Path, int]:
    """Train MobileNetV2; returns (best model file, last model file, best epoch)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    weights = resolve_weights(cfg)
    pretrained = weights is not None
    model = build_model(cfg, weights)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    best_path, last_path = out / "best.keras", out / "last.keras"
    sample_w = np.asarray(class_weights(data.y_train.tolist()), dtype=np.float32)[data.y_train]
    y_onehot = np.eye(len(CLASSES), dtype=np.float32)[data.y_train]
    batches = max(1, math.ceil(len(data.y_train) / cfg.batch_size))
    augment = augmenter(cfg.augment, cfg.seed)

    def to_inputs(x, y, w):  # type: ignore[no-untyped-def]
        x = tf.cast(x, tf.float32)
        return (augment(x, training=True) if augment is not None else x), y, w

    def fine_tune() -> None:
        set_trainable_top(model, cfg.fine_tune_layers, freeze_batchnorm=pretrained)
        _compile(model, cfg.fine_tune_lr, cfg.label_smoothing)

    if cfg.fine_tune_epoch <= 1:
        fine_tune()
        schedule, phase_start = LRSchedule(cfg, cfg.fine_tune_lr), 1
    else:
        freeze_base(model)
        _compile(model, cfg.lr, cfg.label_smoothing)
        schedule, phase_start = LRSchedule(cfg, cfg.lr), 1
    stopper = EarlyStopping(cfg.early_stop_patience)
    best_acc, best_epoch = -1.0, 0
    meta = {"tta": cfg.tta, "classes": list(CLASSES), "config": cfg.to_dict(), "pretrained": pretrained}
    for epoch in range(1, cfg.epochs + 1):
        if epoch == cfg.fine_tune_epoch and epoch > 1:
            # Phase 2: a recompile is needed for the change of `trainable` to take effect.
            fine_tune()
            schedule, phase_start = LRSchedule(cfg, cfg.fine_tune_lr), epoch
            stopper = EarlyStopping(cfg.early_stop_patience)
        lr = schedule.at_epoch_start(epoch, first_epoch=phase_start)
        model.optimizer.learning_rate.assign(lr)
        ds = (
            tf.data.Dataset.from_tensor_slices((data.x_train, y_onehot, sample_w))
            .shuffle(len(y_onehot), seed=cfg.seed + epoch)
            .batch(cfg.batch_size)
            .map(to_inputs)
            .prefetch(2)
        )
        started = time.perf_counter()
        history = model.fit(ds, epochs=1, verbose=0, callbacks=[_progress_callback(hooks, epoch, cfg.epochs, batches)])
        train_time = time.perf_counter() - started
        row = epoch_row(
            epoch=epoch, probs=predict_proba(model, data.x_val, tta=cfg.tta), y_val=data.y_val,
            train_loss=history.history["loss"][0], train_acc=history.history["accuracy"][0], lr=lr,
            images=len(data.y_train), started=started, train_time=train_time,
        )  # fmt: skip
        val_loss = row["val_loss"]
        model.save(last_path)
        write_meta(last_path, {**meta, "epoch": epoch, "metrics": row})
        if row["val_acc"] > best_acc:
            best_acc, best_epoch = row["val_acc"], epoch
            shutil.copyfile(last_path, best_path)
            write_meta(best_path, {**meta, "epoch": epoch, "metrics": row})
        hooks.on_epoch(row)
        schedule.at_epoch_end(val_loss)
        if stopper.should_stop(val_loss):
            break
    return best_path, last_path, best_epoch

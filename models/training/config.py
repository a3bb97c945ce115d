"""Training configuration: one dataclass, and named presets that reproduce the recipes."""

from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any

from domain import FRAMEWORKS, INPUT_SIZE, Framework

AUGMENT_LEVELS = ("none", "moderate", "high")


def only(framework: Framework, default: Any, *, refused: str | None = None) -> Any:
    """A field that only `framework`'s training reads; `refused`: the message when another framework's run sets it."""
    return field(default=default, metadata={"framework": framework, "refused": refused})


def framework_of(option: Field) -> Framework | None:
    """The framework whose training alone reads this field of TrainConfig; None for a field both read."""
    return option.metadata.get("framework")


@dataclass
class TrainConfig:
    framework: str  # "torch" (the 3-block CNN) or "keras" (MobileNetV2)
    data_dir: str
    preset: str = "report"
    test_dir: str | None = None
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4  # L2 penalty
    augment: str = "moderate"
    val_fraction: float = 0.15
    seed: int = 42
    early_stop_patience: int = 10  # epochs without a better val loss before stopping
    schedule: str = "plateau"  # "plateau": ReduceLROnPlateau on val loss; "cosine": warmup then cosine
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    min_lr: float = 1e-6
    warmup_epochs: int = 1  # cosine only: epochs of linear warm-up before the decay
    optimizer: str = "adam"  # "adam" (L2 penalty in the gradient, as the report) or "adamw" (decoupled decay)
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # > 0 evaluates and saves an exponential moving average of the weights
    tta: bool = False  # predict as the mean over the image and its mirror
    crop: bool = False  # crop each scan to the head's bounding box before resizing (training and prediction)
    # CNN only: re-estimate BatchNorm statistics on clean training images (no augmentation, dropout off)
    # before each validation and before saving; its Dropout sits before the next block's BatchNorm, so the
    # running statistics gathered while training do not match what the network sees at prediction time.
    recalibrate_bn: bool = False
    # CNN only: bfloat16 autocast for the training steps (2-3x faster on CPUs with AVX512-BF16);
    # validation and prediction stay in float32.
    bf16: bool = only(Framework.TORCH, False)
    image_size: int = INPUT_SIZE  # the network's input; files of any size are resized inside the pipeline
    # MobileNetV2 only
    pretrained: bool = only(Framework.KERAS, True)
    weights_path: str | None = only(Framework.KERAS, None)
    fine_tune_epoch: int = only(Framework.KERAS, 15)  # epoch (1-based) from which the top of the base is unfrozen
    fine_tune_lr: float = only(Framework.KERAS, 5e-5)
    fine_tune_layers: int = only(Framework.KERAS, 30)  # how many of the base's top layers to unfreeze
    # CNN only: start from this checkpoint's weights (a warm restart: a fresh optimizer and schedule). The
    # checkpoint must come from a run on the same split (seed and validation fraction), or validation leaks.
    init_from: str | None = only(Framework.TORCH, None, refused="starting from a checkpoint is for the CNN only")
    # CNN only: learn from teachers' soft targets (python -m models distill) beside the labels; the loss is
    # (1 - weight) x the labels' loss + weight x T^2 x KL(teacher at temperature T || student at T).
    distill_from: str | None = only(Framework.TORCH, None, refused="distilling teachers is for the CNN only")
    distill_weight: float = only(Framework.TORCH, 0.5)
    distill_temperature: float = only(Framework.TORCH, 2.0)
    # CNN only: mixup (Zhang et al.): each batch trains on pairs of images blended with a weight drawn from
    # Beta(alpha, alpha), against the same blend of their losses; 0 turns it off.
    mixup_alpha: float = only(Framework.TORCH, 0.0, refused="mixup is for the CNN only")
    # Extra labelled images (path, class name), e.g. scans clinicians reviewed; always on the training side.
    extra_items: list[tuple[str, str]] = field(default_factory=list)
    max_images_per_class: int | None = None  # caps each class, for quick runs
    output_dir: str = "var/artifacts"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra_items"] = len(self.extra_items)
        return data


PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    # The report's recipes as written.
    ("torch", "report"): {},
    ("keras", "report"): {
        "epochs": 30,
        "batch_size": 32,
        "lr": 5e-4,
        "augment": "high",
        "early_stop_patience": 7,
        "pretrained": True,
        "fine_tune_epoch": 15,
    },
    # Same architectures; a schedule and averaging that keep validation accuracy from swinging.
    ("torch", "improved"): {
        "epochs": 40,
        "lr": 1e-3,
        "optimizer": "adamw",
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 2,
        "early_stop_patience": 40,
        "label_smoothing": 0.1,
        "ema_decay": 0.998,
        "tta": True,
        "bf16": True,
        "crop": True,
        "recalibrate_bn": True,
    },
    # Without ImageNet weights a frozen random base learns nothing: train the whole network from the start,
    # at 128 px inside the model so that it fits a CPU budget.
    ("keras", "improved"): {
        "epochs": 50,
        "warmup_epochs": 2,
        "early_stop_patience": 50,
        "crop": True,
        "batch_size": 32,
        "lr": 1e-3,
        "augment": "high",
        "schedule": "cosine",
        "label_smoothing": 0.1,
        "pretrained": False,
        "fine_tune_epoch": 1,
        "fine_tune_lr": 1e-3,
        "fine_tune_layers": 10_000,
        "image_size": 128,
        "tta": True,
        "ema_decay": 0.999,
        "recalibrate_bn": True,
    },
}


def preset_names() -> list[str]:
    return sorted({name for _, name in PRESETS})


def make_config(framework: str, data_dir: str, preset: str = "report", **overrides: Any) -> TrainConfig:
    """A config from a named preset, with explicit values (None means "keep the preset's") on top."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")
    if (framework, preset) not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(preset_names())}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    cfg = TrainConfig(framework=framework, data_dir=data_dir, preset=preset)
    cfg = replace(cfg, **PRESETS[(framework, preset)])
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    validate_config(cfg)
    return cfg


class ConfigError(ValueError):
    """Values a run cannot use: `problems` holds one readable message for each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def validate_config(cfg: TrainConfig) -> None:
    """Raise ConfigError naming every value a run cannot use."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems)


def config_problems(cfg: TrainConfig) -> list[str]:
    """Each value a run cannot use, as a readable message (empty when the config is good)."""
    checks = [
        (cfg.epochs >= 1, "epochs must be at least 1"),
        (cfg.epochs <= 500, "epochs must be at most 500"),
        (1 <= cfg.batch_size <= 1024, "batch size must be between 1 and 1024"),
        (0 < cfg.lr <= 1, "learning rate must be in (0, 1]"),
        (cfg.weight_decay >= 0, "weight decay must not be negative"),
        (cfg.augment in AUGMENT_LEVELS, f"augmentation must be one of {', '.join(AUGMENT_LEVELS)}"),
        (0.05 <= cfg.val_fraction <= 0.5, "validation fraction must be between 0.05 and 0.5"),
        (cfg.schedule in ("plateau", "cosine"), "schedule must be plateau or cosine"),
        (cfg.optimizer in ("adam", "adamw"), "optimizer must be adam or adamw"),
        (0 <= cfg.warmup_epochs <= 20, "warm-up epochs must be between 0 and 20"),
        (0 <= cfg.ema_decay < 1, "EMA decay must be in [0, 1)"),
        (cfg.fine_tune_epoch >= 1, "fine-tune epoch must be at least 1"),
        (32 <= cfg.image_size <= 512, "image size must be between 32 and 512"),
        (
            cfg.framework != Framework.TORCH or cfg.image_size == INPUT_SIZE,
            f"the CNN's head fixes its input at {INPUT_SIZE}x{INPUT_SIZE}",
        ),
        (cfg.max_images_per_class is None or cfg.max_images_per_class >= 1, "the cap per class must be at least 1"),
        (0 < cfg.distill_weight <= 1, "the distillation weight must be in (0, 1]"),
        (1 <= cfg.distill_temperature <= 10, "the distillation temperature must be between 1 and 10"),
        (0 <= cfg.mixup_alpha <= 2, "the mixup alpha must be between 0 and 2"),
    ]
    # Another framework's option that would change the run, set on this one: refused rather than ignored.
    checks += [
        (framework_of(option) in (None, cfg.framework) or getattr(cfg, option.name) == option.default, refused)
        for option in fields(TrainConfig)
        if (refused := option.metadata.get("refused"))
    ]
    return [message for ok, message in checks if not ok]

"""The models' command line, `python -m models <command>`: each command a thin parser over a library function.

None writes to the database: `python -m services.training` records a run, `python -m services.predictors` makes
the exports the app predicts from (docs/design/models.md).
"""

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from models.evaluation.answer_rules import FOLDS
from models.inference.series_rule import RULE_FILE as SERIES_RULE_FILE
from models.inference.threads import cap_threads
from models.training.config import TrainConfig, make_config, preset_names
from settings import get_settings


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The options that describe a run, shared by `train` and the recording command (services.training)."""
    p.add_argument("--framework", choices=["torch", "keras"])
    p.add_argument("--data", help="folder with one subfolder per class")
    p.add_argument("--test", help="optional labelled folder scored at the end")
    p.add_argument("--preset", default="report", choices=preset_names())
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--augment", choices=["none", "moderate", "high"])
    p.add_argument("--seed", type=int)
    p.add_argument("--fine-tune-epoch", type=int)
    p.add_argument("--max-images-per-class", type=int)
    p.add_argument("--no-pretrained", action="store_true", help="MobileNetV2 from random init")
    p.add_argument("--bf16", action="store_true", help="CNN: bfloat16 autocast in training steps (faster on CPU)")
    p.add_argument("--weights", help="MobileNetV2 ImageNet no-top .h5 file")
    p.add_argument("--init-from", help="CNN: start from this checkpoint's weights (trained on the same split)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--distill-from", help="CNN: teacher targets (python -m models distill) to learn from")
    p.add_argument("--distill-weight", type=float, help="share of the loss given to the teachers (default 0.5)")
    p.add_argument("--distill-temperature", type=float, help="temperature of the distillation loss (default 2)")
    p.add_argument("--mixup", type=float, dest="mixup_alpha", help="CNN: mixup with Beta(alpha, alpha) weights")
    p.add_argument("--output-dir", help="where checkpoints go (default: ARTIFACT_DIR/runs/<id>)")
    p.add_argument("--threads", type=int, help="framework threads (default: TORCH_THREADS / TF_THREADS)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config from the command line; caps the frameworks' threads as asked."""

    settings = get_settings()
    cap_threads(args.threads or settings.torch_threads, args.threads or settings.tf_threads)
    if not args.framework or not args.data:
        raise SystemExit("--framework and --data are needed")
    overrides = {
        "test_dir": args.test,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "augment": args.augment,
        "seed": args.seed,
        "fine_tune_epoch": args.fine_tune_epoch,
        "max_images_per_class": args.max_images_per_class,
        "pretrained": False if args.no_pretrained else None,
        "bf16": True if args.bf16 else None,
        "weights_path": args.weights,
        "init_from": args.init_from,
        "weight_decay": args.weight_decay,
        "warmup_epochs": args.warmup_epochs,
        "distill_from": args.distill_from,
        "distill_weight": args.distill_weight,
        "distill_temperature": args.distill_temperature,
        "mixup_alpha": args.mixup_alpha,
    }
    cfg = make_config(args.framework, args.data, args.preset, **overrides)
    cfg.output_dir = args.output_dir or str(settings.artifact_dir / "runs" / f"cli-{int(time.time())}")
    return cfg


def _train(args: argparse.Namespace) -> int:
    from models.training.run import resumable_config, run_training
    from models.training.run_types import TrainHooks

    echo = TrainHooks(on_epoch=lambda row: print(json.dumps(row), flush=True))
    if args.resume:
        if args.threads:
            cap_threads(args.threads, args.threads)
        result = run_training(resumable_config(args.resume), echo, resume=True)
    else:
        result = run_training(config_from_args(args), echo)
    print(json.dumps({"best": str(result.best_path), "metrics": result.metrics}, indent=2, default=str))
    return 0


def _train_all(args: argparse.Namespace) -> int:
    from models.training.pipeline import Plan, Steps, train_and_export

    cap_threads(args.threads, args.threads)
    out = Path(args.out)
    plan = Plan(
        data=args.data,
        out=out,
        preset=args.preset,
        epochs=args.epochs,
        max_images_per_class=args.max_images_per_class,
        keras_sizes=tuple(args.keras_sizes),
    )
    step = Steps(print)
    record = train_and_export(plan, step)
    if not args.no_reports:
        cnn, mobilenet = record["files"]["torch"], record["files"]["keras"]
        both = ["--cnn", cnn, "--mobilenet", mobilenet, "--data", args.data]
        weights = out / "weights"
        for name, argv in (
            ("out-of-distribution check", ["ood", "--model", cnn, "--data", args.data]),
            ("pair report", ["pair-report", *both, "--out", str(weights / "pair.json")]),
            ("heatmap figures", ["heatmap-quality", *both, "--out", str(weights / "heatmaps.json")]),
            (
                "series rule",
                [
                    "series-rule",
                    *both,
                    "--pair",
                    str(weights / "pair.json"),
                    "--out",
                    str(weights / "series_rule.json"),
                ],
            ),
        ):
            code = step(name, lambda argv=argv: main(argv))
            if code:
                raise ValueError(f"{name} failed (exit status {code})")
    (out / "train-all.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from models.training.export import export_run

    summary = export_run(args.run_dir, args.out, check=not args.no_check)
    shown = ("shipped_size_mb", "shipped_val_accuracy", "full_precision_val_accuracy")
    print(json.dumps({k: summary.get(k) for k in shown}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from models.evaluation.scoring import evaluate_folder
    from models.training.backends import backend_for_file

    cap_threads(args.threads, args.threads)
    predictor = backend_for_file(args.model).load_predictor(args.model)
    report = {**evaluate_folder(predictor, args.data, batch_size=args.batch_size), "model": str(args.model)}
    print(json.dumps(report, indent=2))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from models.training.calibrate import calibrate_file

    print(json.dumps(calibrate_file(args.model, args.data), indent=2))
    return 0


def _distill(args: argparse.Namespace) -> int:
    from models.training.distill import make_targets, save_targets

    targets = make_targets(args.data, args.model, threads=args.threads)
    save_targets(targets, args.out)
    agree = float((targets.probs.max(1) > 0.5).mean())
    print(json.dumps({"images": len(targets.sha256), "confident_share": agree, "teachers": targets.teachers}))
    return 0


def _health(args: argparse.Namespace) -> int:
    from models.data.health import format_report, health_report

    report = health_report(args.folder, test=args.test)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


def _ood(args: argparse.Namespace) -> int:
    from models.evaluation.ood import fit_command

    cap_threads(args.threads, args.threads)
    report = fit_command(args.model, args.data, args.percentile, args.ood_images)
    print(json.dumps({k: report[k] for k in ("threshold", "validation")}, indent=2))
    for name, family in report["families"].items():
        print(f"{family['caught']:4d} / {family['images']:<4d} caught  {name}")
    return 0


def _pair_report(args: argparse.Namespace) -> int:
    from domain import Framework
    from models.evaluation.pair_probabilities import validation_probabilities
    from models.evaluation.pair_report import format_pair_report, pair_report
    from models.inference.model_meta import file_sha256
    from models.training.backends import backends

    cap_threads(args.threads, args.threads)
    cnn, mobilenet = backends[Framework.TORCH], backends[Framework.KERAS]
    shas = {"cnn": file_sha256(args.cnn), "mobilenet": file_sha256(args.mobilenet)}
    probs = validation_probabilities(
        cnn.load_predictor(args.cnn),
        mobilenet.load_predictor(args.mobilenet),
        cnn.model_meta(args.cnn)["config"],
        args.data,
        args.cache,
        shas,
    )
    report = pair_report(probs["cnn"], probs["mobilenet"], probs["labels"], probs["groups"], folds=args.folds)
    # Names the exact files scored, so a record can be checked against the files shipped beside it.
    report["models"] = {
        "cnn": {"file": Path(args.cnn).name, "sha256": shas["cnn"]},
        "mobilenet": {"file": Path(args.mobilenet).name, "sha256": shas["mobilenet"]},
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(format_pair_report(report))
    return 0


def _series_rule(args: argparse.Namespace) -> int:
    import time

    from domain import Framework
    from models.evaluation.pair_probabilities import validation_probabilities
    from models.evaluation.series_rule import REVIEW_THRESHOLD, report
    from models.inference.model_meta import file_sha256
    from models.training.backends import backends

    cap_threads(args.threads, args.threads)
    started = time.monotonic()
    cnn, mobilenet = backends[Framework.TORCH], backends[Framework.KERAS]
    shas = {"cnn": file_sha256(args.cnn), "mobilenet": file_sha256(args.mobilenet)}
    probs = validation_probabilities(
        cnn.load_predictor(args.cnn, backend="onnx", sha256=shas["cnn"]),
        mobilenet.load_predictor(args.mobilenet, backend="onnx", sha256=shas["mobilenet"]),
        cnn.model_meta(args.cnn)["config"],
        args.data,
        args.cache,
        shas,
    )
    answer, review, answer_from = None, (REVIEW_THRESHOLD, True), "both models' plain average (no pair report given)"
    if args.pair:
        from models.evaluation.answer_rules import cross_fit, grouped_folds

        pair = json.loads(Path(args.pair).read_text())
        if pair["models"]["cnn"]["sha256"] != shas["cnn"] or pair["models"]["mobilenet"]["sha256"] != shas["mobilenet"]:
            raise ValueError(f"{args.pair} was made for other model files")
        name = pair["answer"]["rule"]["name"]
        folds = grouped_folds(
            probs["labels"], probs["groups"], pair["cross_fitting"]["folds"], pair["cross_fitting"]["seed"]
        )
        answer = cross_fit(name, probs["cnn"], probs["mobilenet"], probs["labels"], folds).calibrated
        chosen = pair["review"]["chosen"]
        review = (float(chosen["threshold"]), bool(chosen["on_disagreement"]))
        answer_from = f"the pair report's rule ({name}), each image answered by the rule fitted on the other folds"
    result = report(probs, args.seed, answer, review, answer_from)
    result["models"] = {
        "cnn": {"file": Path(args.cnn).name, "sha256": shas["cnn"]},
        "mobilenet": {"file": Path(args.mobilenet).name, "sha256": shas["mobilenet"]},
    }
    result["seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "grid_on_tuning_half"}, indent=2))
    return 0


def _heatmap_quality(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from domain import CLASSES, INPUT_SIZE, Framework
    from models.data.preprocessing import load_rgb, model_input
    from models.data.split import config_validation
    from models.evaluation.heatmap_quality import score_image, summary
    from models.inference.model_meta import file_sha256
    from models.inference.predictor import OCCLUSION_GRID
    from models.training.backends import backends

    cap_threads(args.threads, args.threads)
    report: dict = {"made_by": "python -m models heatmap-quality", "per_class": args.per_class, "models": {}}
    for name, framework, path in (("cnn", Framework.TORCH, args.cnn), ("mobilenet", Framework.KERAS, args.mobilenet)):
        started = time.monotonic()
        backend, sha = backends[framework], file_sha256(path)
        predictor = backend.load_predictor(path, backend="onnx", sha256=sha, threads=args.threads)
        items, _ = config_validation(backend.model_meta(path)["config"], args.data)
        rng = np.random.default_rng(args.seed)
        # The first per_class images of each class in a shuffled order of the validation split.
        chosen = [
            it
            for c in range(len(CLASSES))
            for it in [it for it in rng.permutation(items) if it.label == c][: args.per_class]
        ]
        scores = [
            score_image(predictor, model_input(load_rgb(it.path), INPUT_SIZE, crop=predictor.crop), it.label, rng)
            for it in chosen
        ]
        report["models"][name] = {
            "file": Path(path).name,
            "sha256": sha,
            "method": Framework(framework).heatmap,
            "grid": "56 x 56" if framework == Framework.TORCH else f"{OCCLUSION_GRID} x {OCCLUSION_GRID}",
            **summary(scores),
            "seconds": round(time.monotonic() - started, 1),
        }
        print(json.dumps({name: report["models"][name]}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _onnx_accuracy(args: argparse.Namespace) -> int:
    from domain import Framework
    from models.evaluation.onnx_accuracy import int8_accuracy
    from models.training.backends import backends

    config = backends[Framework.TORCH].model_meta(args.model)["config"]
    print(json.dumps(int8_accuracy(args.model, config, args.data), indent=2))
    return 0


def _add_pair_arguments(p: argparse.ArgumentParser) -> None:
    """The two model files a command scores together, and the training folder where it moved."""
    p.add_argument("--cnn", required=True)
    p.add_argument("--mobilenet", required=True)
    p.add_argument("--data", help="the training folder, if it moved since the models were trained")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run, parser=sub)
        return sub

    p = command("train", _train, "Train the CNN (torch) or MobileNetV2 (keras) on a labelled folder, unrecorded.")
    add_train_arguments(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR from its last epoch")

    p = command(
        "train-all",
        _train_all,
        "Train both models with their full recipes on the GPU each framework sees (else the CPU), export them and "
        "make every report the shipped models carry, in OUT/weights.",
    )
    p.add_argument("--data", required=True, help="folder with one subfolder per class")
    p.add_argument("--out", required=True, help="runs go to OUT/runs, the models and their reports to OUT/weights")
    p.add_argument("--preset", default="improved", choices=preset_names())
    p.add_argument("--epochs", type=int, help="the preset's where not given")
    p.add_argument("--max-images-per-class", type=int)
    p.add_argument(
        "--keras-sizes",
        type=int,
        nargs="+",
        default=[128],
        help="MobileNetV2 input sizes to train at; the best on validation is kept (e.g. 128 160 224 on a GPU)",
    )
    p.add_argument("--no-reports", action="store_true", help="train and export only")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per framework")

    p = command("export", _export, "Export a training run's best model as a compact shipped model.")
    p.add_argument("--run-dir", required=True, help="the run's output folder (has run.json and best.*)")
    p.add_argument("--out", required=True, help="e.g. models/weights/cnn_default.pth")
    p.add_argument("--no-check", action="store_true", help="skip re-scoring the compact model")

    p = command("evaluate", _evaluate, "Score a saved model on a folder with one subfolder per class (JSON).")
    p.add_argument("--model", required=True, help="a .pth (CNN) or .keras (MobileNetV2) file")
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)

    p = command("calibrate", _calibrate, "Fit a saved model's temperature on its run's validation split.")
    p.add_argument("--model", required=True)
    p.add_argument("--data", help="the training folder, if it moved since the model was trained")

    p = command("distill", _distill, "Soft targets of trained models, for distilling them into the CNN.")
    p.add_argument("--data", required=True, help="the labelled folder the teachers were trained on")
    p.add_argument("--model", action="append", required=True, help="a teacher model file (repeat for several)")
    p.add_argument("--out", required=True, help="the .npz file to write")
    p.add_argument("--threads", type=int, default=2)

    p = command(
        "health",
        _health,
        "Dataset health: images per class, sizes and modes, unreadable files, duplicates, and test images that "
        "have a duplicate in training.",
    )
    p.add_argument("folder", help="a folder with glioma/ meningioma/ notumor/ pituitary/ inside")
    p.add_argument("--test", metavar="DIR", help="a labelled test folder, checked for images also in training")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")

    p = command("ood", _ood, "Fit the out-of-distribution check for a CNN file: <model>.ood.npz and .ood.json.")
    p.add_argument("--model", required=True, help="a CNN checkpoint (.pth) with its training config")
    p.add_argument("--data", help="the training folder, if it moved since the model was trained")
    p.add_argument("--percentile", type=float, default=99.5)
    p.add_argument("--ood-images", nargs="*", default=[], help="image files or folders to report on as well")
    p.add_argument("--threads", type=int, default=2)

    p = command(
        "pair-report",
        _pair_report,
        "Choose, by cross-fitting on the validation split, the rule that makes both models' one answer, and the "
        "review threshold of that answer.",
    )
    _add_pair_arguments(p)
    p.add_argument("--out", help="also write the report here as JSON")
    p.add_argument("--cache", type=Path, help="keep both models' validation probabilities here (.npz)")
    p.add_argument("--folds", type=int, default=FOLDS, help="cross-fitting folds, near-duplicate images kept in one")
    p.add_argument("--threads", type=int, default=2)

    p = command("series-rule", _series_rule, "Choose the series rule on validation pseudo-series of both models.")
    _add_pair_arguments(p)
    p.add_argument("--out", type=Path, default=SERIES_RULE_FILE)
    p.add_argument("--pair", type=Path, help="the pair report whose rule makes each slice's one answer (pair.json)")
    p.add_argument("--cache", type=Path, help="keep both models' validation probabilities here (.npz)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)

    p = command(
        "heatmap-quality",
        _heatmap_quality,
        "Measure both models' heatmaps on validation images: deletion and insertion against a random map, and the "
        "share of heat and of peaks inside the brain.",
    )
    _add_pair_arguments(p)
    p.add_argument("--per-class", type=int, default=50, help="validation images of each class")
    p.add_argument("--out", help="also write the report here as JSON (models/weights/heatmaps.json)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)

    p = command("onnx-accuracy", _onnx_accuracy, "Accuracy of the CNN's fp32 and int8 exports on its validation split.")
    p.add_argument("--model", required=True)
    p.add_argument("--data", help="the training folder, where it moved since the run")

    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as exc:
        # A bad folder, a file that is not a model, missing weights: a sentence, not a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2

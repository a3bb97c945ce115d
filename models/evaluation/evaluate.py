"""Score any saved model on any labelled folder and print JSON.

python -m models.evaluation.evaluate --model models/weights/cnn_default.pth --data DIR
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from domain import Framework
from models.data.dataset import DatasetError, scan_folder
from models.data.preprocessing import load_rgb
from models.evaluation.metrics import classification_report


def evaluate_folder(model_path: str | Path, data_dir: str | Path, *, batch_size: int = 32) -> dict[str, Any]:
    """Accuracy, macro and per-class P/R/F1, confusion matrix and count of a model on a labelled folder."""
    from models.inference.predictor import load_predictor

    items = scan_folder(data_dir)
    predictor = load_predictor(Framework.of_file(model_path), model_path)
    preds: list[int] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        probs = predictor.predict([load_rgb(it.path) for it in chunk])
        preds.extend(int(p) for p in probs.argmax(axis=1))
    report = classification_report(np.array([it.label for it in items]), np.array(preds))
    report["model"] = str(model_path)
    report["data"] = str(data_dir)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Score a saved model on a folder with one subfolder per class.")
    p.add_argument("--model", required=True, help="a .pth (CNN) or .keras (MobileNetV2) file")
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from models.inference.threads import cap_threads

    cap_threads(args.threads, args.threads)
    try:
        report = evaluate_folder(args.model, args.data, batch_size=args.batch_size)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

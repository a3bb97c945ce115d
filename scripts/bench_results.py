"""The benchmark's results, written in one place: `<out>/results.json` (each part's figures merged with those already
there) and `<out>/results.md` (every table, rendered again from the whole file)."""

import json
from pathlib import Path
from typing import Any

from scripts import bench_browser, bench_pacs, bench_serving, bench_uploads, bench_worker_batch
from scripts.bench_stack import FLAGS_SHOWN

PATH_NAMES = {
    "framework": "framework",
    "onnx": "ONNX Runtime (app)",
    "onnx-int8": "ONNX Runtime, Linear in int8 (ONNX_INT8_CNN)",
    "keras-predict": "Keras model.predict (naive)",
}


def inference_markdown(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    ratios = {(r["model"], r["batch"], r["backend"]): r for r in result["ratios"]}
    lines = [
        "| model | path | batch | p50 ms | p95 ms | images/s | framework ÷ this path (p50) | naive ÷ this path (p50) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ratio = ratios.get((r["model"], r["batch"], r["backend"]))
        shown = [
            f"{ratio[key]:.2f}×" if ratio else "" for key in ("framework_over_backend_p50", "naive_over_backend_p50")
        ]
        if r["backend"] == "keras-predict":
            shown[1] = ""
        path = PATH_NAMES[r["backend"]]
        lines.append(
            f"| {r['model']} | {path} | {r['batch']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['images_per_s']:.1f} | {' | '.join(shown)} |"
        )
    lines += [
        "",
        "| model | heatmap on | p50 ms | p95 ms | heatmap ÷ the same path's one-image prediction (p50) |",
        "|---|---|---|---|---|",
        *(
            f"| {h['model']} | {PATH_NAMES[h['backend']]} | {h['p50_ms']:.1f} | {h['p95_ms']:.1f} | "
            f"{h['over_prediction_p50']:.2f}× |"
            for h in result.get("heatmaps", [])
        ),
    ]
    rss = result["rss_both_models_mb"]
    lines += [
        "",
        "| process with both models loaded, after a prediction and a heatmap of each | RSS MB | frameworks imported |",
        "|---|---|---|",
        *(f"| {backend} | {v['rss_mb']:.0f} | {', '.join(v['imported']) or '–'} |" for backend, v in rss.items()),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or 'none of ' + str(FLAGS_SHOWN)}; "
        f"1-minute load average {m['load_average_1min_at_start']:.2f} at the start; threads "
        f"torch/tf/onnx {result['threads']['torch']}/{result['threads']['tf']}/{result['threads']['onnx']}; "
        f"{result['date']}.",
    ]
    return lines


SCENARIOS = {
    "batch_worker": bench_worker_batch,
    "training_while_serving": bench_serving,
    "uploads_memory": bench_uploads,
    "browser_diagnose": bench_browser,
    "series_pacs": bench_pacs,
}


TITLES = {
    "batch_worker": "Batch job through the worker, both models",
    "training_while_serving": "Prediction latency while a training run shares the machine",
    "uploads_memory": "App memory after distinct uploads on the Diagnose page",
    "browser_diagnose": "Diagnose in the browser: upload to result",
    "series_pacs": "A DICOM series from the scanner to its answer and back to the PACS",
}


def conditions_line(result: dict[str, Any]) -> str:
    m, threads = result["machine"], result["threads"]
    return (
        f"Measured {result['date']} on {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or 'none shown'}; "
        f"1-minute load average {m['load_average_1min_at_start']:.2f} at the start; threads torch/tf/onnx "
        f"{threads['torch']}/{threads['tf']}/{threads['onnx']}."
    )


def scenarios_markdown(scenarios: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, result in scenarios.items():
        lines += ["", f"### {TITLES[name]}", ""]
        if "skipped" in result:
            lines.append(f"Not measured: {result['skipped']}.")
        else:
            lines += [*SCENARIOS[name].markdown(result), "", conditions_line(result)]
    return lines


def write(out: Path, *, inference: dict[str, Any] | None = None, scenarios: dict[str, Any] | None = None) -> list[str]:
    """Merge the inference part and the scenarios given into `<out>/results.json`, write `<out>/results.md` again;
    returns the tables of what was given."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if inference is not None:
        result = {**inference, "scenarios": result.get("scenarios", {})}
    if scenarios is not None:
        result["scenarios"] = {**result.get("scenarios", {}), **scenarios}
    path.write_text(json.dumps(result, indent=2) + "\n")
    tables = inference_markdown(result) if "rows" in result else []
    (out / "results.md").write_text("\n".join([*tables, *scenarios_markdown(result.get("scenarios", {}))]) + "\n")
    return [
        *(inference_markdown(inference) if inference is not None else []),
        *(scenarios_markdown(scenarios) if scenarios is not None else []),
    ]

"""The benchmark runs end to end in its quick modes: the audit log on a small log, the inference paths on a few
calls and the end-to-end scenarios on a few images (their figures are not asserted)."""

import json

import pytest

from scripts.benchmark import bench_audit, bench_single_scan
from tests.skip import skip_unless_required


def test_the_audit_benchmark_measures_every_query():
    rows = bench_audit(entries=300)
    assert rows[0] == "| audit log query over 300 entries | ms (median of 5) |"
    measured = rows[2:]
    assert len(measured) == 9
    for row in measured:
        name, ms = (cell.strip() for cell in row.strip("|").split("|"))
        assert name and float(ms) >= 0


def test_the_one_scan_benchmark_loads_predicts_and_draws_both_shipped_models_maps() -> None:
    rows = bench_single_scan(repeats=8)
    assert rows[0] == "| model | load s | predict ms (1 image) | heatmap ms | file MB |"
    measured = {row.split("|")[1].strip().split(" ")[0]: row for row in rows[2:4]}
    assert set(measured) == {"torch", "keras"}
    for row in measured.values():
        load_s, predict_ms, heatmap_ms, size_mb = (float(cell) for cell in row.strip("|").split("|")[1:])
        assert min(predict_ms, heatmap_ms, size_mb) > 0


@pytest.mark.slow
def test_the_inference_benchmark_compares_both_paths_and_writes_its_results(tmp_path):
    from scripts.bench_inference import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    models = {r["model"] for r in result["rows"]}
    assert len(models) == 2
    cnn = next(m for m in models if m.startswith("torch"))
    mnv2 = next(m for m in models if m.startswith("keras"))
    assert {(r["model"], r["backend"], r["batch"]) for r in result["rows"]} == {
        (m, backend, batch) for m in models for backend in ("framework", "onnx") for batch in (1, 4)
    } | {(cnn, "onnx-int8", batch) for batch in (1, 4)} | {(mnv2, "keras-predict", batch) for batch in (1, 4)}
    for row in result["rows"]:
        assert row["p95_ms"] >= row["p50_ms"] > 0 and row["images_per_s"] > 0
    assert len(result["ratios"]) == 8
    assert all(r["framework_over_backend_p50"] > 0 and r["naive_over_backend_p50"] > 0 for r in result["ratios"])
    assert {(h["model"], h["backend"]) for h in result["heatmaps"]} == {
        (m, backend) for m in models for backend in ("framework", "onnx")
    }
    assert all(h["p95_ms"] >= h["p50_ms"] > 0 and h["over_prediction_p50"] > 0 for h in result["heatmaps"])
    rss = result["rss_both_models_mb"]
    assert rss["onnx"]["imported"] == ["onnxruntime"] and {"torch", "tensorflow"} <= set(rss["framework"]["imported"])
    assert result["machine"]["cpu"] and result["machine"]["cores"] >= 1
    table = (tmp_path / "results.md").read_text()
    assert "| model | path | batch | p50 ms | p95 ms | images/s |" in table and "RSS MB" in table
    assert "| model | heatmap on | p50 ms |" in table


def _batch_worker(batch: dict) -> None:
    rows = {r["backend"]: r for r in batch["rows"]}
    assert set(rows) == {"framework", "onnx"}
    for row in rows.values():
        assert row["images"] + row["skipped"] == 8 and row["errors"] == 0 and row["images_per_s"] > 0
        assert row["wall_s"] > 0 and row["worker_peak_rss_mb"] > 0 and row["worker_cpu_s"] > 0
    assert rows["onnx"]["frameworks_in_worker"] == ["onnxruntime"]
    assert {"torch", "tensorflow"} <= set(rows["framework"]["frameworks_in_worker"])
    assert batch["onnx_over_framework_images_per_s"] > 0 and batch["framework_over_onnx_wall_s"] > 0


def _training_while_serving(serving: dict) -> None:
    assert {(r["model"], r["while"]) for r in serving["rows"]} == {
        (m, w) for m in ("torch", "keras") for w in ("alone", "training")
    }
    assert all(r["p95_ms"] >= r["p50_ms"] > 0 and r["images_per_s"] > 0 for r in serving["rows"])
    assert serving["training_alone"]["images_per_s"] > 0 and serving["training_while_serving"]["images_per_s"] > 0


def _uploads_memory(uploads: dict) -> None:
    assert uploads["uploads"] == 5 and uploads["answered_by_both_models"] >= 1
    assert uploads["peak_rss_mb"] >= uploads["rss_after_mb"] > uploads["rss_page_open_mb"] > 0
    assert uploads["page_run"]["calls"] == 4 and uploads["first_page_run_ms"] > 0


def _browser_diagnose(browser: dict) -> None:
    assert len(browser["uploads_s"]) == 1 and browser["median_s"] > 0 and browser["warm_up_s"] > 0


def _series_pacs(series: dict) -> None:
    assert series["slices"] == 6 and series["predicted"] == 6
    assert 0 < series["c_store_s"] < series["answer_s"] <= series["report_in_pacs_s"]
    assert series["answer_s"] >= series["idle_s"]


SMOKES = {
    "batch_worker": _batch_worker,
    "training_while_serving": _training_while_serving,
    "uploads_memory": _uploads_memory,
    "browser_diagnose": _browser_diagnose,
    "series_pacs": _series_pacs,
}


def test_every_end_to_end_scenario_has_its_smoke() -> None:
    from scripts.bench_scenarios import SCENARIOS

    assert set(SMOKES) == set(SCENARIOS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMOKES))
def test_an_end_to_end_scenario_runs_in_quick_mode_and_writes_its_figures(name: str, tmp_path) -> None:
    """Each scenario on a few images, in its own processes (a real worker per backend, a real training run, the
    Diagnose page driven in AppTest and in Chromium, a series through Orthanc): `make bench` measures them in
    full. Their figures are not asserted, only that they are there."""
    from scripts.bench_scenarios import main

    assert main(["--quick", "--only", name, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())["scenarios"][name]
    if "skipped" in result:  # no redis-server, browser or Orthanc here
        skip_unless_required(f"{name}: {result['skipped']}")
    assert result["machine"]["cpu"] and result["machine"]["cores"] >= 1 and result["threads"]["onnx"] >= 1
    SMOKES[name](result)
    assert (tmp_path / "results.md").read_text().count("### ") >= 1

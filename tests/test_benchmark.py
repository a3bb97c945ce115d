"""The benchmark runs end to end in its quick modes: the audit log on a small log, and the inference paths on a
few calls (their figures are not asserted)."""

from scripts.benchmark import bench_audit


def test_the_audit_benchmark_measures_every_query():
    rows = bench_audit(entries=300)
    assert rows[0] == "| audit log query over 300 entries | ms (median of 5) |"
    measured = rows[2:]
    assert len(measured) == 8
    for row in measured:
        name, ms = (cell.strip() for cell in row.strip("|").split("|"))
        assert name and float(ms) >= 0


def test_the_inference_benchmark_compares_both_paths_and_writes_its_results(tmp_path):
    import json

    from scripts.bench_inference import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    models = {r["model"] for r in result["rows"]}
    assert len(models) == 2
    cnn = next(m for m in models if m.startswith("torch"))
    assert {(r["model"], r["backend"], r["batch"]) for r in result["rows"]} == {
        (m, backend, batch) for m in models for backend in ("framework", "onnx") for batch in (1, 4)
    } | {(cnn, "onnx-int8", batch) for batch in (1, 4)}
    for row in result["rows"]:
        assert row["p95_ms"] >= row["p50_ms"] > 0 and row["images_per_s"] > 0
    assert len(result["ratios"]) == 6 and all(r["framework_over_backend_p50"] > 0 for r in result["ratios"])
    rss = result["rss_both_models_mb"]
    assert rss["onnx"]["imported"] == ["onnxruntime"] and {"torch", "tensorflow"} <= set(rss["framework"]["imported"])
    assert result["machine"]["cpu"] and result["machine"]["cores"] >= 1
    table = (tmp_path / "results.md").read_text()
    assert "| model | path | batch | p50 ms | p95 ms | images/s |" in table and "RSS MB" in table

"""The project's speed and memory benchmark: prints the markdown tables the README shows (docs/design/benchmarks.md).

make bench        (or .venv/bin/python -m scripts.benchmark [--skip-batch] [--skip-scenarios] [--only-audit])
"""

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scripts import bench_decode, bench_inference, bench_results, bench_scenarios
from settings import DEFAULT_MODEL_FILES, ROOT, SAMPLE_DIR, get_settings


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: graph tracing and allocator growth are not what a clinician waits for twice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def bench_single_scan(repeats: int = 20) -> list[str]:
    from models.data.preprocessing import load_rgb
    from models.inference.predictor import OnnxPredictor
    from models.inference.threads import cap_threads
    from models.training.backends import backends

    settings = get_settings()
    cap_threads(settings.torch_threads, settings.tf_threads)
    images = [load_rgb(p) for p in sorted(SAMPLE_DIR.glob("*/*.jpg"))[:repeats]]
    rows = ["| model | load s | predict ms (1 image) | heatmap ms | file MB |", "|---|---|---|---|---|"]
    for framework, path in DEFAULT_MODEL_FILES.items():
        if not path.is_file():
            rows.append(f"| {framework} | – | no shipped model at {path.relative_to(ROOT)} | – | – |")
            continue
        start = time.perf_counter()
        # As the app loads it: on its inference backend (the ONNX exports made, as start-up makes them, on the first
        # run of this command).
        predictor = backends[framework].load_predictor(
            path, backend=settings.inference_backend, threads=settings.onnx_threads
        )
        if isinstance(predictor, OnnxPredictor) and framework == "torch":
            predictor.heatmap_session()  # the CNN's heatmap graph (MobileNetV2's map runs its prediction graph)
        load_s = time.perf_counter() - start
        it = iter(images * 3)
        predict_ms = _median_ms(lambda p=predictor, it=it: p.predict([next(it)]), repeats)
        cam_ms = _median_ms(lambda p=predictor, it=it: p.heatmap(next(it)), max(5, repeats // 4))
        rows.append(
            f"| {framework} ({path.name}) | {load_s:.1f} | {predict_ms:.0f} | {cam_ms:.0f} | {path.stat().st_size / 1e6:.1f} |"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(
        f"\nBackend: {settings.inference_backend}; threads per framework: {settings.torch_threads}, per ONNX Runtime "
        f"session: {settings.onnx_threads}; peak memory of this process: {peak:.0f} MB"
    )
    return rows


def bench_history(predictions: int = 10_000) -> list[str]:
    from sqlalchemy.orm import Session

    from db.history import PredictionFilters, list_patients, list_predictions, patient_timeline
    from db.migrate import upgrade_to_head
    from db.session import make_engine
    from db.worklist import QueueFilters, queue_counts, review_queue
    from scripts.seed_history import seed

    folder = Path(tempfile.mkdtemp(prefix="bench-history-"))
    os.environ["UPLOAD_DIR"] = str(folder / "scans")
    get_settings.cache_clear()
    url = f"sqlite:///{folder / 'bench.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        seed(session, predictions=predictions, patients=500, review_share=0.1, rng=random.Random(0))
    rows = [f"| query over {predictions:,} predictions | ms (median of 5) |", "|---|---|"]
    with Session(engine) as session:
        first = list_patients(session=session, limit=25).rows[0].patient_pk
        cases = {
            "patient list, first page of 25": lambda: list_patients(session=session, limit=25),
            "patient search by part of the id": lambda: list_patients(session=session, search="1", limit=25),
            "predictions, first page of 50": lambda: list_predictions(
                session=session, filters=PredictionFilters(), limit=50
            ),
            "predictions, last page of 50": lambda: list_predictions(
                session=session, filters=PredictionFilters(), limit=50, offset=predictions - 50
            ),
            "predictions by class + needs review + not read": lambda: list_predictions(
                session=session,
                filters=PredictionFilters(labels=("glioma",), needs_review=True, read=False),
                limit=50,
            ),
            "one patient's timeline": lambda: patient_timeline(session=session, patient_pk=first),
            "review queue, every scan awaiting a read in order": lambda: review_queue(
                session=session, filters=QueueFilters()
            ),
            "review queue, counts per state": lambda: queue_counts(session=session, filters=QueueFilters()),
        }
        for name, fn in cases.items():
            times = []
            for _ in range(5):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1000)
            rows.append(f"| {name} | {np.median(times):.1f} |")
    engine.dispose()
    return rows


def bench_audit(entries: int = 100_000) -> list[str]:
    """The audit log's queries over `entries` seeded rows (50 users, 2,000 patients, 30 days)."""
    from datetime import timedelta

    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from db import throttle
    from db.audit import (
        HASHED_FIELDS,
        AuditFilters,
        Who,
        audit_page,
        chain_hash,
        count_entries,
        iter_entries,
        record,
        verify_chain,
    )
    from db.migrate import upgrade_to_head
    from db.schema import AuditEntry, utcnow
    from db.session import make_engine
    from domain import AuditAction

    folder = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    url = f"sqlite:///{folder / 'bench.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    rng = random.Random(0)
    now, actions = utcnow(), [a.value for a in AuditAction]
    rows = [
        {
            "at": now - timedelta(seconds=rng.randrange(30 * 86400)),
            "user_id": (user := rng.randrange(50)),
            "username": f"user{user}",
            "action": rng.choice(actions),
            "target": f"scan {rng.randrange(50_000)}",
            "patient_mrn": f"P-{rng.randrange(2000):05d}",
            "detail": "seeded",
            "session_id": f"s{rng.randrange(5000)}",
            "client": f"10.0.{rng.randrange(4)}.{rng.randrange(250)}",
        }
        for _ in range(entries)
    ]
    rows.sort(key=lambda r: r["at"])
    prev_hash = None
    for row in rows:  # chained as the app appends them
        row["prev_hash"] = prev_hash
        row["entry_hash"] = prev_hash = chain_hash(prev_hash, [row.get(name) for name in HASHED_FIELDS])
    with Session(engine) as session, session.begin():
        session.execute(insert(AuditEntry), rows)
    week = AuditFilters(since=now - timedelta(days=7))
    table = [f"| audit log query over {entries:,} entries | ms (median of 5) |", "|---|---|"]
    with Session(engine) as session:
        cases = {
            "first page of 100, no filter (and its count)": lambda: (
                audit_page(session=session, filters=AuditFilters(), per_page=100),
                count_entries(session=session, filters=AuditFilters()),
            ),
            "page 500 of 100, no filter": lambda: audit_page(
                session=session, filters=AuditFilters(), page=499, per_page=100
            ),
            "one user's entries, first page (and count)": lambda: (
                audit_page(session=session, filters=AuditFilters(username="user7"), per_page=100),
                count_entries(session=session, filters=AuditFilters(username="user7")),
            ),
            "one patient's entries (and count)": lambda: (
                audit_page(session=session, filters=AuditFilters(patient_mrn="P-00042"), per_page=100),
                count_entries(session=session, filters=AuditFilters(patient_mrn="P-00042")),
            ),
            "one action in the last 7 days (and count)": lambda: (
                audit_page(session=session, filters=AuditFilters(action="export", since=week.since), per_page=100),
                count_entries(session=session, filters=AuditFilters(action="export", since=week.since)),
            ),
            "sign-in throttle: lock a name's and an address's counters": lambda: (
                throttle.lock(session=session, keys={"name:user7": "user7", "client:10.0.1.7": None}),
                session.rollback(),
            ),
            "append one entry (its link to the chain included)": lambda: (
                record(session=session, action="export", who=Who(7, "user7"), target="bench"),
                session.rollback(),
            ),
            "check the whole chain (make audit-verify)": lambda: verify_chain(session=session),
            "export of the last 7 days (CSV rows)": lambda: sum(1 for _ in iter_entries(session=session, filters=week)),
        }
        for name, fn in cases.items():
            table.append(f"| {name} | {_median_ms(fn, 5):.1f} |")
    engine.dispose()
    return table


def bench_batch(images: int) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "scripts.benchmark_batch", "--images", str(images)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in out.stdout.splitlines() if line.startswith("|")] or [out.stdout]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-batch", action="store_true")
    p.add_argument("--batch-images", type=int, default=1000)
    p.add_argument("--audit-entries", type=int, default=100_000)
    p.add_argument("--only-audit", action="store_true", help="just the audit log's queries")
    p.add_argument("--skip-scenarios", action="store_true", help="leave out the end-to-end scenarios")
    args = p.parse_args(argv)
    print(f"## Audit log at {args.audit_entries:,} entries\n")
    print("\n".join(bench_audit(args.audit_entries)))
    if args.only_audit:
        return 0
    print("\n## One scan (Diagnose page)\n")
    print("\n".join(bench_single_scan()))
    print("\n## Framework against ONNX Runtime\n")
    print("\n".join(bench_results.write(ROOT / "bench", inference=bench_inference.measure())))
    print("\n## Decoding uploads in the sandbox\n")
    print("\n".join(bench_decode.markdown(bench_decode.measure())))
    print("\n## History at scale\n")
    print("\n".join(bench_history()))
    if not args.skip_batch:
        print(f"\n## Batch prediction of {args.batch_images:,} images\n")
        print("\n".join(bench_batch(args.batch_images)))
    if not args.skip_scenarios:
        print("\n## End to end")
        print("\n".join(bench_results.write(ROOT / "bench", scenarios=bench_scenarios.measure())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

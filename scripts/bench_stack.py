"""What the benchmark's parts share: the machine, latency summaries, a process's memory, CPU time and loaded
frameworks read from /proc, and for the end-to-end scenarios the shipped models copied with their ONNX exports,
a throw-away app (database, folders, a clinician), a private Redis and a fresh process per scenario."""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from scripts.harness import RedisServer, free_port
from settings import DEFAULT_MODEL_FILES, ROOT, get_settings

FLAGS_SHOWN = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
USERNAME = "bench-clinician"
PASSWORD = "bench password 1"
# The shared library each framework maps into a process that imported it.
FRAMEWORK_LIBRARIES = {"torch": "libtorch", "tensorflow": "tensorflow", "onnxruntime": "onnxruntime"}


def machine() -> dict[str, Any]:
    """CPU model, cores this process may use, the vector flags that decide kernel choice, and the load now."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name", platform.processor() or platform.machine()),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": [f for f in FLAGS_SHOWN if f in flags],
        "load_average_1min_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
    }


def bench_models(cache: Path) -> dict[str, Path]:
    """Copies of the shipped models under `cache/<sha256 prefix>/` (with their run records and out-of-distribution
    statistics), each with its ONNX exports made as start-up makes them; made once and reused while the shipped
    file is the same. The scenarios write nothing beside models/weights/."""
    from models.evaluation.ood import report_path, stats_path
    from models.training.backends import backends
    from services.model_files import file_sha256

    copies = {}
    for framework, source in DEFAULT_MODEL_FILES.items():
        if not source.is_file():
            raise FileNotFoundError(f"no shipped {framework} model at {source}")
        sha256 = file_sha256(source)
        folder = cache / sha256[:16]
        folder.mkdir(parents=True, exist_ok=True)
        for path in (source, Path(f"{source}.json"), stats_path(source), report_path(source)):
            if path.is_file() and not (folder / path.name).is_file():
                # Whole or not at all: a copy cut short must not pass for the model on the next run.
                shutil.copyfile(path, folder / f"{path.name}.part")
                os.replace(folder / f"{path.name}.part", folder / path.name)
        copies[framework] = folder / source.name
        backends[framework].make_exports(copies[framework], sha256, threads=get_settings().onnx_threads)
        (folder / EXPORTS_MADE).touch()
    return copies


# Left in a model's copy once its exports are made: a later scenario finds it and starts no process to check them.
EXPORTS_MADE = ".exports-made"


def bench_models_ready(cache: Path) -> bool:
    """Whether bench_models has made every shipped model's copy and exports in `cache` (the copies are named by
    their sha256: a changed shipped file is not ready)."""
    from services.model_files import file_sha256

    return all(
        source.is_file() and (cache / file_sha256(source)[:16] / EXPORTS_MADE).is_file()
        for source in DEFAULT_MODEL_FILES.values()
    )


def throwaway_app(folder: Path, models: dict[str, Path], *, data_root: Path | None = None) -> dict[str, str]:
    """Point this process at a new migrated SQLite database and folders under `folder`, with `models` active and
    a clinician (USERNAME, PASSWORD); returns the environment variables that point a child process there too."""
    from db.migrate import upgrade_to_head
    from db.runs import register_model_version
    from db.session import reset_engine, session_scope
    from db.users import create_user
    from services.model_files import file_sha256

    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
        "UPLOAD_DIR": str(folder / "scans"),
        "ARTIFACT_DIR": str(folder / "artifacts"),
        "ALLOWED_DATA_ROOTS": str(data_root or folder / "data"),
    }
    os.environ.update(env)
    get_settings.cache_clear()
    reset_engine()
    upgrade_to_head(env["DATABASE_URL"])
    with session_scope() as session:
        for framework, path in models.items():
            register_model_version(
                session=session,
                framework=framework,
                name=path.stem,
                artifact_path=path,
                sha256=file_sha256(path),
                activate=True,
            )
        create_user(session=session, username=USERNAME, password=PASSWORD, role="clinician")
    return env


def clinician():  # -> services.auth.Actor
    """The throw-away app's clinician, signed in: a session of the server's, as the services check it."""
    from services.auth import sign_in

    return sign_in(USERNAME, PASSWORD)


@contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """A redis-server of the scenario's own on a free port (no other app's queues or workers); yields its URL."""
    if shutil.which("redis-server") is None:
        raise FileNotFoundError("redis-server is not installed (make install installs it as root)")
    server = RedisServer(free_port(), folder)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"{field} is not in /proc/{pid}/status")


def rss_mb(pid: int | None = None) -> float:
    """Resident memory now."""
    return round(_status_kb(pid or os.getpid(), "VmRSS") / 1024, 1)


def peak_rss_mb(pid: int | None = None) -> float:
    """The most resident memory the process has held (its high-water mark)."""
    return round(_status_kb(pid or os.getpid(), "VmHWM") / 1024, 1)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a Celery worker's pool)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name, in parentheses, may hold spaces: the parent's pid is the second field after it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds the process has used (user and system): what its work costs whatever else the cores run."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def frameworks_loaded(pid: int | None = None) -> list[str]:
    """Which of torch, tensorflow and onnxruntime have their libraries mapped into the process."""
    maps = Path(f"/proc/{pid or os.getpid()}/maps").read_text()
    return sorted(name for name, library in FRAMEWORK_LIBRARIES.items() if library in maps)


def latency(times_ms: Sequence[float], *, images_per_call: int = 1) -> dict[str, Any]:
    """p50 and p95 of per-call times, and the images per second they add up to."""
    p50, p95 = np.percentile(times_ms, [50, 95])
    return {
        "calls": len(times_ms),
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "images_per_s": round(images_per_call * 1000 / float(np.mean(times_ms)), 1),
    }


def conditions() -> dict[str, Any]:
    """The machine and the load on it as a scenario starts, and the thread settings the app runs with."""
    settings = get_settings()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "threads": {"torch": settings.torch_threads, "tf": settings.tf_threads, "onnx": settings.onnx_threads},
        "worker_concurrency": settings.worker_concurrency,
    }


def run_scenario(module: str, *, quick: bool, cache: Path, timeout_s: float) -> dict[str, Any]:
    """Run a scenario's `child` in a fresh process (`python -m module --child`) and return its figures."""
    out = subprocess.run(
        [sys.executable, "-m", module, "--child", *(["--quick"] if quick else []), str(cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{module} exited with {out.returncode}:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(child: Callable[[bool, Path], dict[str, Any]], argv: list[str] | None = None) -> int:
    """A scenario's fresh process: `--child [--quick] CACHE`; prints its figures as one line of JSON, or why it
    was skipped (no redis-server, no browser, no shipped model)."""
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("cache", type=Path, help="where the copies of the shipped models are kept")
    args = p.parse_args(argv)
    try:
        result = child(args.quick, args.cache)
    except FileNotFoundError as exc:
        result = {"skipped": str(exc)}
    print(json.dumps(result))
    return 0

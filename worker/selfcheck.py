"""The self-check job: can this installation write its database and folders, and are its models intact?"""

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from uuid import uuid4

from db.jobs import get_job, set_progress
from db.runs import get_active_model
from db.schema import FRAMEWORKS
from db.session import session_scope
from services.model_files import check_file, companion_problems, companion_states
from settings import get_settings
from worker.jobs import Reporter, UserError

# A check returns None when all is well, else what is wrong, in words a person can act on.
Check = Callable[[], str | None]


def run_selfcheck(reporter: Reporter) -> dict[str, Any]:
    """Run every check as one progress step; fail with the list of what is wrong."""
    checks = _checks(reporter.job_id)
    outcomes: dict[str, str] = {}
    for step, (name, check) in enumerate(checks, start=1):
        reporter.check_cancel()
        try:
            problem = check()
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        outcomes[name] = problem or "ok"
        reporter.progress(step, len(checks), f"{name}: {outcomes[name]}")
    failed = [f"{name}: {outcome}" for name, outcome in outcomes.items() if outcome != "ok"]
    if failed:
        raise UserError(f"{len(failed)} of {len(checks)} checks failed. " + "; ".join(failed))
    reporter.progress(len(checks), len(checks), f"all {len(checks)} checks passed")
    return {"checks": outcomes}


def _checks(job_id: int) -> list[tuple[str, Check]]:
    settings = get_settings()
    checks: list[tuple[str, Check]] = [
        (f"artifact folder {settings.artifact_dir} is writable", partial(_folder_writable, settings.artifact_dir)),
        (f"upload folder {settings.upload_dir} is writable", partial(_folder_writable, settings.upload_dir)),
    ]
    with session_scope() as session:
        for framework in FRAMEWORKS:
            version = get_active_model(session=session, framework=framework)
            if version is not None:
                name = f"active {framework} model {version.name!r} (version {version.id}) is intact"
                checks.append(
                    (name, partial(_artifact_intact, Path(version.artifact_path), version.sha256, version.id))
                )
    total = len(checks) + 1
    return [("database is writable", partial(_database_writable, job_id, total)), *checks]


def _database_writable(job_id: int, total: int) -> str | None:
    # A write that commits and reads back in a new transaction proves more than taking a lock would.
    marker = f"checking the database ({uuid4().hex[:8]})"
    with session_scope() as session:
        set_progress(session=session, job_id=job_id, current=0, total=total, message=marker)
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        return None if job is not None and job.message == marker else "a committed write did not read back"


def _folder_writable(folder: Path) -> str | None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".selfcheck-") as probe:
        probe.write(b"ok")
        probe.flush()
    return None


def _artifact_intact(path: Path, sha256: str, version_id: int) -> str | None:
    """The model file, and the files its answers depend on, as recorded."""
    problems = [check_file(path, sha256).problem(path), *companion_problems(companion_states(version_id))]
    return "; ".join(p for p in problems if p) or None

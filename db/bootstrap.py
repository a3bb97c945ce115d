"""Start-up chores: bring the database to the newest schema and give each framework a model to use."""

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.orm import Session

from db.migrate import upgrade_to_head
from db.runs import import_run_summary, list_model_versions, register_model_version
from db.schema import ModelVersion
from db.session import session_scope
from settings import DEFAULT_MODEL_FILES


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks so large weights don't fill memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def register_default_models(
    *, session: Session, files: Mapping[str, Path] = DEFAULT_MODEL_FILES
) -> list[ModelVersion]:
    """Register and activate the shipped weights of each framework that has no model version yet."""
    registered = []
    for framework, path in files.items():
        if not path.is_file() or list_model_versions(session=session, framework=framework):
            continue
        sha = file_sha256(path)
        # The shipped file carries the record of the run that produced it, so the leaderboard shows it too.
        summary = _shipped_run_summary(path)
        run = import_run_summary(session=session, summary=summary, artifact_path=path, sha256=sha) if summary else None
        version = register_model_version(
            session=session,
            framework=framework,
            name=path.stem,
            artifact_path=path,
            sha256=sha,
            run_id=run.id if run else None,
            activate=True,
        )
        registered.append(version)
    return registered


def _shipped_run_summary(path: Path) -> dict | None:
    meta = Path(str(path) + ".json")
    if not meta.is_file():
        return None
    return json.loads(meta.read_text()).get("run")


def main() -> None:
    """Migrate, then register the shipped models: what the run command does before starting anything."""
    upgrade_to_head()
    with session_scope() as session:
        for version in register_default_models(session=session):
            print(f"registered the shipped {version.framework} model {version.name!r} and made it active")
    print("database ready")


if __name__ == "__main__":
    main()

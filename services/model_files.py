"""Model files on disk: their digest, the one check that a file is still the one registered, and the
registration of the shipped default models (the bootstrap step, never a page render)."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from db.runs import import_run_summary, list_model_versions, register_model_version
from db.schema import ModelVersion
from models.inference.model_meta import file_sha256, read_sidecar
from models.training.backends import backends

__all__ = ["FileCheck", "check_file", "file_sha256", "register_default_models"]
from settings import DEFAULT_MODEL_FILES


@dataclass(frozen=True)
class FileCheck:
    """Whether a model file is still the one registered: "ok", "changed" or "missing"."""

    state: str
    sha256: str | None  # of the file as it is now
    size_bytes: int | None

    def problem(self, path: str | Path) -> str | None:
        """What is wrong with the file, in a sentence; None when it is the registered one."""
        if self.state == "missing":
            return f"its file is missing: {path}"
        if self.state == "changed":
            return f"its file changed after it was registered: {path} (sha256 now {self.sha256})"
        return None


def check_file(path: str | Path, sha256: str) -> FileCheck:
    """Hash the file now and compare it with the sha256 it was registered with."""
    file = Path(path)
    if not file.is_file():
        return FileCheck("missing", None, None)
    actual = file_sha256(file)
    return FileCheck("ok" if actual == sha256 else "changed", actual, file.stat().st_size)


def register_default_models(
    *, session: Session, files: Mapping[str, Path] = DEFAULT_MODEL_FILES, archive: Path | None = None
) -> list[ModelVersion]:
    """Register each shipped model file not registered yet, and make it the active one of its framework.

    A new release ships better defaults under the same file names; the versions registered from the earlier
    files stay, pointed at their copies in `archive` (models/weights/archive/), so a rollback still finds them.
    """
    archive = archive or next(iter(files.values()), Path()).parent / "archive"
    registered = []
    for framework, path in files.items():
        if not path.is_file():
            continue
        sha = file_sha256(path)
        versions = list_model_versions(session=session, framework=framework)
        _relink_to_archive([v for v in versions if v.artifact_path == str(path) and v.sha256 != sha], archive)
        if any(v.sha256 == sha for v in versions):
            continue
        # The shipped file carries the record of the run that produced it, so the leaderboard shows it too.
        summary = read_sidecar(path).get("run")
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


def _relink_to_archive(versions: list[ModelVersion], archive: Path) -> None:
    """Point versions whose shipped file was replaced at the archived copy with their sha256, if there is one."""
    if not versions or not archive.is_dir():
        return
    models = (p for p in archive.iterdir() if p.is_file() and any(b.owns(p) for b in backends.values()))
    by_sha = {file_sha256(p): p for p in models}
    for version in versions:
        if version.sha256 in by_sha:
            version.artifact_path = str(by_sha[version.sha256])

"""Model files on disk: their digest, the one check that a file is still the one registered, the files a
version's answers depend on besides it (ONNX exports, sidecar, out-of-distribution statistics and report, pair
report) checked against the sha256 recorded when they were made, and the registration of the shipped default
models (the bootstrap step, never a page render)."""

import argparse
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from sqlalchemy.orm import Session

from db.model_files import record_digest, recorded_digests, version_files
from db.runs import get_model_version, import_run_summary, list_model_versions, register_model_version
from db.schema import ModelVersion
from db.session import read_scope, session_scope
from domain import ModelFileRole
from models.evaluation.ood import report_path, stats_path
from models.inference.model_meta import file_sha256, read_sidecar, sidecar_path
from models.inference.onnx_export import export_path
from models.training.backends import backends
from settings import DEFAULT_MODEL_FILES, DEFAULT_WEIGHTS_DIR

__all__ = [
    "CompanionFiles",
    "FileCheck",
    "ModelFileProblem",
    "check_file",
    "companion_problems",
    "companion_states",
    "companion_summary",
    "file_sha256",
    "record_companions",
    "register_default_models",
]

log = logging.getLogger(__name__)

# A pair report (which two model files it scored, the rule of their one answer and its review threshold) sits beside
# the models it scored, as the shipped pair's does.
PAIR_NAME = "pair.json"
# The heatmaps' measured faithfulness and placement (python -m models heatmap-quality), read by the model cards.
HEATMAPS_NAME = "heatmaps.json"
PAIR_REPORT = DEFAULT_WEIGHTS_DIR / PAIR_NAME
# Exports are made from the model file whenever they are missing; every other file is the only copy.
REMADE = {ModelFileRole.ONNX, ModelFileRole.ONNX_INT8, ModelFileRole.ONNX_HEATMAP}


class ModelFileProblem(ValueError):
    """The model file, or a file its answers depend on, is missing or is no longer the one recorded; the message
    says which, `what` names its kind without its path (for messages that clinicians read)."""

    def __init__(self, message: str, *, what: str = "file") -> None:
        super().__init__(message)
        self.what = what


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
    session.flush()
    for version in registered:
        # The files shipped beside it are as trusted as the model file itself, now, at installation.
        _record_found(session, version.artifact_path, version.sha256)
    return registered


def _record_found(session: Session, artifact_path: str, sha256: str) -> None:
    files = CompanionFiles(artifact_path, sha256, {}, companion_paths(artifact_path))
    files.take_present(made=False)
    files.save(session)


def _relink_to_archive(versions: list[ModelVersion], archive: Path) -> None:
    """Point versions whose shipped file was replaced at the archived copy with their sha256, if there is one."""
    if not versions or not archive.is_dir():
        return
    models = (p for p in archive.iterdir() if p.is_file() and any(b.owns(p) for b in backends.values()))
    by_sha = {file_sha256(p): p for p in models}
    for version in versions:
        if version.sha256 in by_sha:
            version.artifact_path = str(by_sha[version.sha256])


def companion_paths(artifact_path: str | Path) -> dict[ModelFileRole, Path]:
    """Where each file a model's answers depend on lives: beside the model file."""
    return {
        ModelFileRole.ONNX: export_path(artifact_path),
        ModelFileRole.ONNX_INT8: export_path(artifact_path, int8=True),
        ModelFileRole.ONNX_HEATMAP: export_path(artifact_path, heatmap=True),
        ModelFileRole.SIDECAR: sidecar_path(artifact_path),
        ModelFileRole.OOD_STATS: stats_path(artifact_path),
        ModelFileRole.OOD_REPORT: report_path(artifact_path),
        ModelFileRole.PAIR_REPORT: Path(artifact_path).parent / PAIR_NAME,
    }


def _pair_names(report: Path, sha256: str) -> bool:
    """Whether the pair report scored the model file whose sha256 is `sha256`."""
    try:
        models = json.loads(report.read_bytes())["models"]
        return sha256 in {models["cnn"]["sha256"], models["mobilenet"]["sha256"]}
    except (OSError, ValueError, KeyError, TypeError):
        return False


@dataclass
class CompanionFiles:
    """The files one model file's answers depend on, checked against what is recorded for its versions: each one's
    bytes as it is opened (`check`, handed to the loaders), and what was made or first seen meanwhile (`save`)."""

    artifact_path: str
    sha256: str
    recorded: dict[str, str]
    paths: dict[ModelFileRole, Path]
    made: dict[ModelFileRole, str] = field(default_factory=dict)
    seen: dict[ModelFileRole, str] = field(default_factory=dict)

    @classmethod
    def of(cls, artifact_path: str, sha256: str) -> "CompanionFiles":
        with read_scope() as session:
            recorded = recorded_digests(session=session, artifact_path=artifact_path, sha256=sha256)
        return cls(artifact_path, sha256, recorded, companion_paths(artifact_path))

    def role_of(self, path: Path) -> ModelFileRole | None:
        return next((role for role, known in self.paths.items() if Path(path) == known), None)

    def check(self, path: Path, data: bytes, made: bool) -> None:
        """Refuse bytes that are not those recorded for their file (ModelFileProblem, in words)."""
        role = self.role_of(path)
        if role is None:
            return
        digest = hashlib.sha256(data).hexdigest()
        if made:
            self.made[role] = digest
            return
        expected = self.recorded.get(role)
        if expected is None:
            self.seen[role] = digest
        elif digest != expected:
            remedy = " (remove it, and it is made again from the model file)" if role in REMADE else ""
            raise ModelFileProblem(
                f"its {role.label} {path} is not the one recorded when it was made (sha256 now {digest[:12]}…, "
                f"recorded {expected[:12]}…){remedy}",
                what=role.label,
            )

    def verify(self, *roles: ModelFileRole) -> None:
        """Check these files now, where they are: one that was recorded must be there and unchanged."""
        for role in roles:
            path = self.paths[role]
            if role == ModelFileRole.PAIR_REPORT and role not in self.recorded and not _pair_names(path, self.sha256):
                continue  # a report of two other models: nothing of this one
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                if role in self.recorded and role not in REMADE:
                    raise ModelFileProblem(
                        f"its {role.label} {path} was recorded when it was made but is missing", what=role.label
                    ) from None
                continue
            self.check(path, data, False)

    def take_present(self, *, made: bool) -> None:
        """Check every one of these files that is there now (`made`: as made just now, to be recorded anew)."""
        for role, path in self.paths.items():
            if path.is_file() and (role != ModelFileRole.PAIR_REPORT or _pair_names(path, self.sha256)):
                self.check(path, path.read_bytes(), made)

    def save(self, session: Session | None = None) -> None:
        """Record what was made now (replacing what was recorded) and what was seen for the first time, in
        `session` where given (its caller commits), else in a transaction of its own."""
        if not (self.made or self.seen):
            return
        if session is None:
            with session_scope() as own:
                self.save(own)
            return
        for roles, replace in ((self.seen, False), (self.made, True)):
            for role, digest in roles.items():
                record_digest(
                    session=session,
                    artifact_path=self.artifact_path,
                    sha256=self.sha256,
                    role=role.value,
                    path=str(self.paths[role]),
                    digest=digest,
                    replace=replace,
                )
        self.recorded |= {role.value: d for role, d in (self.seen | self.made).items()}
        self.made, self.seen = {}, {}


def record_companions(artifact_path: str, sha256: str) -> list[ModelFileRole]:
    """Record the files this model's answers depend on as they are now, where one is new or was made again (after
    training, fitting the check, making the exports); returns the roles recorded."""
    files = CompanionFiles(artifact_path, sha256, {}, companion_paths(artifact_path))
    files.take_present(made=True)
    roles = list(files.made)
    files.save()
    return roles


@dataclass(frozen=True)
class CompanionState:
    """One recorded file of a version as it is now: "ok", "changed" or "missing"."""

    role: ModelFileRole
    path: str
    state: str


def companion_states(version_id: int) -> list[CompanionState]:
    """Each file recorded for a version, hashed now (what the Models page shows beside the model file's check)."""
    with read_scope() as session:
        rows = [
            (ModelFileRole(r.role), r.path, r.sha256) for r in version_files(session=session, version_id=version_id)
        ]
    rows.sort(key=lambda row: list(ModelFileRole).index(row[0]))
    states = []
    for role, path, expected in rows:
        try:
            status = Path(path).stat()
        except FileNotFoundError:
            states.append(CompanionState(role, path, "missing"))
            continue
        digest = _digest(path, status.st_size, status.st_mtime_ns)
        states.append(CompanionState(role, path, "ok" if digest == expected else "changed"))
    return states


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, hashed again only when its size or modification time changes (the Models page asks on
    every redraw)."""
    return file_sha256(path)


def companion_problems(states: list[CompanionState]) -> list[str]:
    """What is wrong with a version's recorded files, a sentence each (a missing export is made again, not wrong)."""
    problems = []
    for c in states:
        if c.state == "changed":
            problems.append(f"its {c.role.label} {c.path} is not the one recorded when it was made")
        elif c.state == "missing" and c.role not in REMADE:
            problems.append(f"its {c.role.label} {c.path} was recorded when it was made but is missing")
    return problems


def companion_summary(states: list[CompanionState]) -> str:
    """The files a version's answers depend on, as checked now, in a sentence for the Models page."""
    ok = [c.role.label for c in states if c.state == "ok"]
    remade = [c.role.label for c in states if c.state == "missing" and c.role in REMADE]
    if not states:
        return "No file its answers depend on is recorded yet: each is recorded when it is made or first loaded."
    sentence = f"The {len(ok)} file(s) its answers depend on ({', '.join(ok)}) match the sha256 recorded when made."
    if remade:
        sentence += f" Missing, and made again from the model file when it is next loaded: {', '.join(remade)}."
    return sentence


def main(argv: list[str] | None = None) -> int:
    """python -m services.model_files record VERSION [...]: record the files each version's answers depend on as
    they are now (after its statistics were fitted again or its exports made again by hand); until then a changed
    one refuses the model."""
    p = argparse.ArgumentParser(description=(main.__doc__ or "").splitlines()[0])
    p.add_argument("command", choices=["record"])
    p.add_argument("versions", nargs="+", type=int)
    args = p.parse_args(argv)
    for version_id in args.versions:
        with read_scope() as session:
            version = get_model_version(session=session, version_id=version_id)
            found = (version.artifact_path, version.sha256) if version is not None else None
        if found is None:
            p.error(f"model version {version_id} does not exist")
        problem = check_file(found[0], found[1]).problem(found[0])
        if problem:
            p.error(f"version {version_id}: nothing recorded: {problem}")
        roles = record_companions(*found)
        print(f"version {version_id}: recorded {', '.join(r.label for r in roles) or 'no file'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

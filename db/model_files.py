"""The sha256 recorded for each file a model version's answers depend on besides its model file."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import ModelFile, ModelVersion, utcnow


def recorded_digests(*, session: Session, artifact_path: str, sha256: str) -> dict[str, str]:
    """role -> sha256 recorded for the versions registered with this model file (the latest where they differ)."""
    query = (
        select(ModelFile.role, ModelFile.sha256)
        .join(ModelVersion, ModelVersion.id == ModelFile.model_version_id)
        .where(ModelVersion.artifact_path == artifact_path, ModelVersion.sha256 == sha256)
        .order_by(ModelFile.recorded_at, ModelFile.id)
    )
    return {role: digest for role, digest in session.execute(query)}


def version_files(*, session: Session, version_id: int) -> list[ModelFile]:
    """What is recorded for one version, by role."""
    query = select(ModelFile).where(ModelFile.model_version_id == version_id).order_by(ModelFile.role)
    return list(session.scalars(query))


def record_digest(
    *, session: Session, artifact_path: str, sha256: str, role: str, path: str, digest: str, replace: bool
) -> int:
    """Record `digest` for the file playing `role` for every version registered with this model file; where one is
    recorded already it is kept unless `replace` (the file was made again just now). Returns how many changed."""
    versions = session.scalars(
        select(ModelVersion.id).where(ModelVersion.artifact_path == artifact_path, ModelVersion.sha256 == sha256)
    )
    changed = 0
    for version_id in list(versions):
        row = session.scalar(select(ModelFile).where(ModelFile.model_version_id == version_id, ModelFile.role == role))
        if row is None:
            session.add(ModelFile(model_version_id=version_id, role=role, path=path, sha256=digest))
            changed += 1
        elif replace and (row.sha256, row.path) != (digest, path):
            row.sha256, row.path, row.recorded_at = digest, path, utcnow()
            changed += 1
    session.flush()
    return changed


def pair_report_digests(*, session: Session, model_sha256s: list[str]) -> set[str]:
    """The sha256 recorded for the pair report with any version of these model files."""
    query = (
        select(ModelFile.sha256)
        .join(ModelVersion, ModelVersion.id == ModelFile.model_version_id)
        .where(ModelVersion.sha256.in_(model_sha256s), ModelFile.role == "pair_report")
    )
    return set(session.scalars(query))

"""Choosing the model clinicians get, and handing out model files: admins only, each step audited."""

from pathlib import Path

from db.runs import activate_model_version, get_model_version
from db.session import session_scope
from domain import AuditAction, UserError
from services.auth import Actor, audit, require_admin


def activate(actor: Actor | None, *, version_id: int, rollback: bool = False) -> str:
    """Make a version active (promotion, or `rollback` to the previous one); returns the version's name."""
    require_admin(actor, "roll back models" if rollback else "promote models")
    with session_scope() as session:
        try:
            version = activate_model_version(session=session, version_id=version_id)
        except LookupError as exc:
            raise UserError(f"Model version {version_id} does not exist.") from exc
        action = AuditAction.MODEL_ROLLED_BACK if rollback else AuditAction.MODEL_PROMOTED
        audit(
            actor,
            action,
            target=f"model version {version_id}",
            detail=f"{version.framework}: {version.name}",
            session=session,
        )
        return version.name


def model_file(actor: Actor | None, *, version_id: int) -> bytes:
    """The bytes of a version's model file, for a download (audited)."""
    require_admin(actor, "download model files")
    with session_scope() as session:
        version = get_model_version(session=session, version_id=version_id)
        if version is None:
            raise UserError(f"Model version {version_id} does not exist.")
        path = Path(version.artifact_path)
        audit(
            actor, AuditAction.MODEL_DOWNLOADED, target=f"model version {version_id}", detail=str(path), session=session
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"The model file {path} cannot be read: {exc.strerror}.") from exc

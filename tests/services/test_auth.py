"""Sign-in, throttling, roles checked where the work is done, and every refusal in the audit log."""

from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from db.audit import AuditFilters, audit_page
from db.schema import AuditEntry
from db.session import session_scope
from db.users import count_users
from db.users import main as users_cli
from domain import AuditAction, NotAllowed, UserError
from models.training.config import make_config
from services import auth, records, registry
from services.auth import SignInError, sign_in
from settings import SAMPLE_DIR
from tests.users import PASSWORD, make_actor
from worker.submit import cancel_job, submit_training


def actions(username: str | None = None) -> list[str]:
    with session_scope() as session:
        rows = audit_page(session=session, filters=AuditFilters(username=username), per_page=1000)
    return [r.action for r in reversed(rows)]


def test_a_right_password_signs_in_and_a_wrong_one_is_refused_and_audited(db_url):
    make_actor("clinician", "ana")
    actor = sign_in("Ana ", PASSWORD, session_id="s1", client="10.0.0.7")
    assert (actor.username, actor.role, actor.session_id) == ("ana", "clinician", "s1")
    with pytest.raises(SignInError, match="Wrong user name or password"):
        sign_in("ana", "not the password")
    with pytest.raises(SignInError, match="Wrong user name or password"):
        sign_in("nobody", PASSWORD)  # the same words: the message never tells which names exist
    assert actions("ana") == ["sign_in", "sign_in_failed"]
    assert actions("nobody") == ["sign_in_failed"]


def test_the_sixth_failure_in_a_row_is_throttled_even_with_the_right_password(db_url, monkeypatch):
    make_actor("clinician", "ben")
    for _ in range(5):
        with pytest.raises(SignInError, match="Wrong"):
            sign_in("ben", "wrong password")
    with pytest.raises(SignInError, match="Too many failed sign-ins"):
        sign_in("ben", PASSWORD)
    assert actions("ben") == ["sign_in_failed"] * 5 + ["sign_in_throttled"]
    # Once the lockout has passed, the right password works again.
    monkeypatch.setenv("SIGNIN_LOCKOUT_S", "1")
    from settings import get_settings

    get_settings.cache_clear()
    import time

    time.sleep(1.1)
    assert sign_in("ben", PASSWORD).username == "ben"


def test_a_client_address_is_throttled_across_names(db_url, monkeypatch):
    monkeypatch.setenv("CLIENT_MAX_FAILURES", "3")
    from settings import get_settings

    get_settings.cache_clear()
    make_actor("clinician", "cleo")
    for name in ("x1", "x2", "x3"):
        with pytest.raises(SignInError, match="Wrong"):
            sign_in(name, "guess", client="10.9.9.9")
    with pytest.raises(SignInError, match="Too many"):
        sign_in("cleo", PASSWORD, client="10.9.9.9")
    assert sign_in("cleo", PASSWORD, client="10.1.1.1").username == "cleo"


def test_a_disabled_user_cannot_sign_in(db_url):
    admin = make_actor("admin")
    clinician = make_actor("clinician", "dora")
    auth.set_disabled(admin, user_id=clinician.user_id, disabled=True)
    with pytest.raises(SignInError):
        sign_in("dora", PASSWORD)
    assert auth.current(clinician.user_id) is None


def test_the_last_enabled_admin_cannot_be_disabled_or_demoted(db_url):
    admin = make_actor("admin")
    with pytest.raises(UserError, match="last enabled admin"):
        auth.set_disabled(admin, user_id=admin.user_id, disabled=True)
    with pytest.raises(UserError, match="last enabled admin"):
        auth.change_role(admin, user_id=admin.user_id, role="clinician")
    second = auth.add_user(admin, username="eve", password=PASSWORD, role="admin")
    auth.set_disabled(admin, user_id=second.id, disabled=True)
    with pytest.raises(UserError, match="last enabled admin"):
        auth.change_role(admin, user_id=admin.user_id, role="clinician")
    auth.set_disabled(admin, user_id=second.id, disabled=False)
    assert auth.change_role(admin, user_id=admin.user_id, role="clinician").role == "clinician"


def test_a_clinician_is_refused_admin_work_and_each_refusal_is_audited(db_url):
    clinician = make_actor("clinician", "finn")
    cfg = make_config("torch", str(SAMPLE_DIR), "report", epochs=1)
    attempts = [
        lambda: submit_training(cfg, actor=clinician),
        lambda: registry.activate(clinician, version_id=1),
        lambda: registry.activate(clinician, version_id=1, rollback=True),
        lambda: registry.model_file(clinician, version_id=1),
        lambda: records.remove_scan(clinician, scan_id=1),
        lambda: records.remove_patient(clinician, patient_pk=1, mrn="P-1"),
        lambda: auth.add_user(clinician, username="gus", password=PASSWORD, role="admin"),
        lambda: auth.reset_password(clinician, user_id=clinician.user_id, password="a new password"),
        lambda: auth.change_role(clinician, user_id=clinician.user_id, role="admin"),
    ]
    for attempt in attempts:
        with pytest.raises(NotAllowed, match="Only an admin may"):
            attempt()
    assert actions("finn") == ["refused"] * len(attempts)
    with session_scope() as session:
        assert count_users(session=session) == 1  # gus was not added
        details = session.scalars(select(AuditEntry.detail).where(AuditEntry.action == "refused")).all()
    assert "train models" in details and "delete patients" in details and "download model files" in details


def test_a_clinician_may_cancel_their_own_jobs_but_not_anothers(db_url):
    from db.jobs import create_job, set_celery_id

    ana, ben = make_actor("clinician", "ana"), make_actor("clinician", "ben")
    with session_scope() as session:
        job_id = create_job(session=session, kind="selfcheck", params={}, submitted_by=ana.user_id).id
        set_celery_id(session=session, job_id=job_id, celery_id="not-sent")
    with pytest.raises(NotAllowed):
        cancel_job(job_id, actor=ben)
    assert cancel_job(job_id, actor=ana) == f"Job {job_id} cancelled."
    assert actions("ben") == ["refused"] and actions("ana") == ["job_cancelled"]


def test_the_database_refuses_to_change_or_remove_audit_entries(any_db_url):
    auth.audit(None, AuditAction.SIGN_IN_FAILED, detail="x")
    for statement in ("UPDATE audit_log SET detail = 'y'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError, match="append-only"), session_scope() as session:
            session.execute(text(statement))
    assert actions() == ["sign_in_failed"]


def test_the_migration_lists_every_audit_action():
    from importlib import import_module

    migration = import_module("db.migrations.versions.0003_users_and_audit")
    assert set(migration.ACTIONS) == {a.value for a in AuditAction}


def test_create_admin_reads_the_password_from_stdin_and_refuses_a_short_one(db_url, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert users_cli(["create-admin", "root"]) == 1
    assert "at least 10 characters" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert users_cli(["create-admin", "root"]) == 0
    assert sign_in("root", PASSWORD).role == "admin"


def test_no_password_or_hash_reaches_the_audit_log_or_its_export(db_url, tmp_path: Path):
    from services.audit_log import export_csv

    admin = make_actor("admin")
    auth.add_user(admin, username="hana", password="hana's secret pw", role="clinician")
    with pytest.raises(SignInError):
        sign_in("hana", "a wrong secret guess")
    sign_in("hana", "hana's secret pw")
    exported = export_csv(admin, filters=AuditFilters()).decode()
    with session_scope() as session:
        hashes = session.scalars(text("SELECT password_hash FROM users")).all()
    for secret in ("hana's secret pw", "a wrong secret guess", *hashes, "$argon2"):
        assert secret not in exported
    assert "user_created" in exported and "sign_in_failed" in exported

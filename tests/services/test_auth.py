"""Sign-in, throttling, roles checked where the work is done, and every refusal in the audit log."""

from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DatabaseError

from db.audit import AuditFilters, audit_page
from db.schema import AuditEntry, UserSession
from db.session import session_scope
from db.users import count_users, find_user
from db.users import main as users_cli
from domain import AuditAction, NotAllowed, UserError
from models.training.config import make_config
from services import auth, reads, records, registry
from services.auth import SessionEnded, SignInError, sign_in
from services.sign_in_throttle import client_address, client_bucket, sign_in_holds
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
    assert auth.verify(actor).login_id == actor.login_id  # a live session of the server's
    with pytest.raises(SignInError, match="Wrong user name or password"):
        sign_in("ana", "not the password")
    with pytest.raises(SignInError, match="Wrong user name or password"):
        sign_in("nobody", PASSWORD)  # the same words: the message never tells which names exist
    assert actions("ana") == ["sign_in", "sign_in_failed"]
    assert actions("nobody") == ["sign_in_failed"]  # found by the name, though it is stored only as a keyed hash


def test_a_password_typed_as_the_user_name_and_browser_session_ids_are_never_stored_in_clear(any_db_url):
    typed = "Hunter2-is-my-password"
    with pytest.raises(SignInError):
        sign_in(typed, "", session_id="streamlit-session-0123", client="10.0.0.8")
    with session_scope() as session:
        dump = " ".join(
            str(value)
            for table in ("audit_log", "sign_in_throttle", "sessions")
            for row in session.execute(text(f"SELECT * FROM {table}")).all()
            for value in row
        )
        [entry] = session.scalars(select(AuditEntry)).all()
    assert typed.lower() not in dump.lower() and "streamlit-session-0123" not in dump
    assert entry.username.startswith("#") and entry.session_id.startswith("#") and entry.client == "10.0.0.8"
    # An admin who knows the name typed still finds its entries.
    assert actions(typed) == ["sign_in_failed"]


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


def test_a_disabled_user_cannot_sign_in_and_their_session_ends(db_url):
    admin = make_actor("admin")
    clinician = make_actor("clinician", "dora")
    auth.set_disabled(admin, user_id=clinician.user_id, disabled=True)
    with pytest.raises(SignInError):
        sign_in("dora", PASSWORD)
    with pytest.raises(SessionEnded, match="disabled") as ended:
        auth.verify(clinician)
    assert ended.value.reason == "disabled"


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


def test_a_clinician_cannot_disable_or_enable_a_user_and_the_refusal_is_audited(db_url):
    clinician = make_actor("clinician", "hana")
    colleague = make_actor("clinician", "ivan")
    admin = make_actor("admin")
    for disabled in (True, False):
        with pytest.raises(NotAllowed, match="Only an admin may disable or enable users; you are signed in as hana"):
            auth.set_disabled(clinician, user_id=colleague.user_id, disabled=disabled)
    # Nothing changed: the colleague still signs in and their session still holds.
    assert sign_in("ivan", PASSWORD).username == "ivan"
    assert auth.verify(colleague).username == "ivan"
    assert actions("hana") == ["refused", "refused"]
    with session_scope() as session:
        assert find_user(session=session, username="ivan").disabled is False
        details = session.scalars(select(AuditEntry.detail).where(AuditEntry.action == "refused")).all()
    assert details == ["disable or enable users", "disable or enable users"]
    assert auth.set_disabled(admin, user_id=colleague.user_id, disabled=True).disabled is True


def test_disabling_ends_every_session_of_the_user_and_each_change_is_audited_under_the_admin(db_url):
    admin = make_actor("admin")
    first, second = make_actor("clinician", "jade"), make_actor("clinician", "jade")
    auth.set_disabled(admin, user_id=first.user_id, disabled=True)
    with session_scope() as session:
        ended = session.execute(
            select(UserSession.ended_reason, UserSession.ended_at).where(UserSession.user_id == first.user_id)
        ).all()
    assert [reason for reason, _ in ended] == ["disabled", "disabled"] and all(at is not None for _, at in ended)
    auth.set_disabled(admin, user_id=first.user_id, disabled=False)
    with session_scope() as session:
        entries = session.execute(
            select(AuditEntry.username, AuditEntry.action, AuditEntry.target, AuditEntry.detail)
            .where(AuditEntry.action.in_(["user_disabled", "user_enabled"]))
            .order_by(AuditEntry.id)
        ).all()
    target = f"user {first.user_id}"
    assert [tuple(e) for e in entries] == [
        ("test-admin", "user_disabled", target, "jade"),
        ("test-admin", "user_enabled", target, "jade"),
    ]
    # Enabling does not bring the ended sessions back: the user signs in again.
    with pytest.raises(SessionEnded):
        auth.verify(second)
    # An admin whose own session ended is told what they were doing when asked to sign in again.
    auth.sign_out(admin)
    with pytest.raises(NotAllowed, match="sign in again to disable or enable users"):
        auth.set_disabled(admin, user_id=first.user_id, disabled=True)


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


def test_the_newest_migration_that_sets_the_audit_actions_lists_every_one():
    from importlib import import_module

    from settings import ROOT

    names = sorted(p.stem for p in (ROOT / "db" / "migrations" / "versions").glob("0*.py"))
    modules = [import_module(f"db.migrations.versions.{name}") for name in names]
    newest = [m for m in modules if hasattr(m, "ACTIONS")][-1]
    assert set(newest.ACTIONS) == {a.value for a in AuditAction}


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


def set_setting(monkeypatch, name: str, value: str) -> None:
    from settings import get_settings

    monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def guess_in_parallel(name: str, guesses: int, client: str) -> list[str]:
    """`guesses` wrong passwords for `name` at the same moment, from threads of their own; what each was told."""
    import threading

    start, said = threading.Barrier(guesses), []

    def guess() -> None:
        start.wait()
        try:
            sign_in(name, "a wrong guess", client=client)
        except SignInError as exc:
            said.append(str(exc))

    threads = [threading.Thread(target=guess) for _ in range(guesses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return said


@pytest.mark.parametrize("role", ["clinician", "admin"])
def test_twelve_parallel_guesses_at_one_name_get_at_most_the_limit_checked(any_db_url, role):
    make_actor(role, "gail")
    said = guess_in_parallel("gail", 12, "10.0.0.9")
    assert len(said) == 12
    assert actions("gail").count("sign_in_failed") == 5  # checked: the limit, however the guesses raced
    assert actions("gail").count("sign_in_throttled") == 7
    assert sum("Too many failed sign-ins" in text for text in said) == 7


def test_nobody_can_keep_an_admin_locked_out_their_waits_grow_from_the_guessing_address_only(db_url, monkeypatch):
    import time

    from db.schema import utcnow

    root = make_actor("admin", "root")

    def wait_s() -> float:
        """How long the guessing address's last failure holds it back."""
        [hold] = sign_in_holds([root_row]).values()
        assert hold.per_address
        return (hold.until - last_failure()).total_seconds()

    def last_failure():  # type: ignore[no-untyped-def]
        from db.schema import SignInThrottle

        with session_scope() as session:
            return session.scalar(select(func.max(SignInThrottle.last_failure_at)))

    def sit_out() -> None:
        [hold] = sign_in_holds([root_row]).values()
        time.sleep(max(0.0, (hold.until - utcnow()).total_seconds()) + 0.05)

    with session_scope() as session:
        root_row = find_user(session=session, username="root")
    for _ in range(5):
        with pytest.raises(SignInError, match="Wrong"):
            sign_in("root", "a guess", client="203.0.113.66")
    with pytest.raises(SignInError, match="Too many failed sign-ins: wait"):
        sign_in("root", PASSWORD, client="203.0.113.66")  # the guessing address waits, even with the password
    assert wait_s() == 2
    # The admin, anywhere else, signs in at once.
    assert sign_in("root", PASSWORD, client="10.0.0.1").user_id == root.user_id
    sit_out()
    with pytest.raises(SignInError, match="Wrong"):
        sign_in("root", "another guess", client="203.0.113.66")
    assert wait_s() == 4  # twice as long after each further failure
    set_setting(monkeypatch, "SIGNIN_MAX_DELAY_S", "3")
    assert wait_s() == 3  # never longer than SIGNIN_MAX_DELAY_S


@pytest.mark.slow
def test_an_admins_unlock_or_password_reset_ends_a_lockout(db_url, capsys):
    admin = make_actor("admin")
    clinician = make_actor("clinician", "hugo")
    for _ in range(5):
        with pytest.raises(SignInError):
            sign_in("hugo", "a guess")
    with pytest.raises(SignInError, match="Too many"):
        sign_in("hugo", PASSWORD)
    with session_scope() as session:
        hugo = find_user(session=session, username="hugo")
    [hold] = sign_in_holds([hugo]).values()
    assert hold.failures == 5 and not hold.per_address
    auth.unlock(admin, user_id=clinician.user_id)
    assert sign_in("hugo", PASSWORD).username == "hugo"

    for _ in range(5):
        with pytest.raises(SignInError):
            sign_in("hugo", "a guess")
    auth.reset_password(admin, user_id=clinician.user_id, password="a brand new password")
    assert sign_in("hugo", "a brand new password").username == "hugo"

    for _ in range(5):
        with pytest.raises(SignInError):
            sign_in("hugo", "a guess")
    assert users_cli(["unlock", "hugo"]) == 0  # on the server, when no admin can sign in
    assert sign_in("hugo", "a brand new password").username == "hugo"
    assert actions().count("user_unlocked") == 2


def test_sign_out_ends_the_session_for_every_tab_that_holds_it(db_url):
    make_actor("clinician", "ivy")
    first_tab = sign_in("ivy", PASSWORD, session_id="tab-1")
    other_tab = auth.session_actor(first_tab.login_id, session_id="tab-2")  # a reload or a second tab
    auth.sign_out(first_tab)
    for tab in (first_tab, other_tab):
        with pytest.raises(SessionEnded, match="You signed out"):
            auth.verify(tab)
    with pytest.raises(NotAllowed, match="sign in again to read scans"):
        reads.read_scan(other_tab, scan_id=1, label="glioma", note=None)
    assert actions("ivy") == ["sign_in", "sign_out", "refused"]


def age_session(login_id: int, **minutes: float) -> None:
    """Move a session's sign-in (`created`) or last activity (`seen`) that many minutes into the past."""
    from datetime import timedelta

    from db.schema import UserSession

    with session_scope() as session:
        row = session.get(UserSession, login_id)
        if "seen" in minutes:
            row.last_seen_at -= timedelta(minutes=minutes["seen"])
        if "created" in minutes:
            row.created_at -= timedelta(minutes=minutes["created"])
            row.expires_at -= timedelta(minutes=minutes["created"])


def test_idle_expiry_is_measured_on_the_server(db_url):
    actor = make_actor("clinician", "jan")
    age_session(actor.login_id, seen=29)
    assert auth.verify(actor).username == "jan"  # activity: the idle time starts again
    age_session(actor.login_id, seen=31)
    with pytest.raises(NotAllowed, match="30 minutes without activity"):
        reads.read_scan(actor, scan_id=1, label="glioma", note=None)
    assert not auth.is_live(actor.login_id)
    assert actions("jan") == ["session_expired", "refused"]


def test_a_session_ends_session_max_hours_after_its_sign_in_however_active(db_url):
    actor = make_actor("clinician", "kim")
    age_session(actor.login_id, created=8 * 60 + 1)  # tests.users opens sessions for 8 hours
    with pytest.raises(SessionEnded, match="hours after signing in"):
        auth.verify(actor)


def test_a_role_change_ends_the_users_sessions_so_a_demoted_admin_can_do_no_admin_work(db_url):
    root = make_actor("admin", "root")
    demoted = make_actor("admin", "lea")
    auth.change_role(root, user_id=demoted.user_id, role="clinician")
    with pytest.raises(NotAllowed, match="changed your role"):
        registry.activate(demoted, version_id=1)
    again = sign_in("lea", PASSWORD)
    assert again.role == "clinician"
    with pytest.raises(NotAllowed, match="Only an admin may"):
        registry.activate(again, version_id=1)


def test_the_browser_trades_a_one_time_code_for_the_cookie_once(db_url):
    from datetime import timedelta

    from db.schema import UserSession

    make_actor("clinician", "max")
    actor = sign_in("max", PASSWORD)
    assert not auth.has_cookie(actor)
    code = auth.cookie_code(actor)
    token = auth.claim_cookie(code)
    assert token and auth.has_cookie(actor) and auth.cookie_is_live(token)
    assert auth.claim_cookie(code) is None  # spent
    assert auth.cookie_actor(token, session_id="reloaded").login_id == actor.login_id  # a reload finds the session
    late = auth.cookie_code(actor)
    with session_scope() as session:
        session.get(UserSession, actor.login_id).handoff_expires_at -= timedelta(seconds=auth.HANDOFF_S + 1)
    assert auth.claim_cookie(late) is None  # expired
    assert auth.cookie_actor("a made-up token") is None and not auth.cookie_is_live("a made-up token")
    auth.sign_out(actor)
    assert not auth.cookie_is_live(token)
    with pytest.raises(SessionEnded, match="You signed out"):
        auth.cookie_actor(token)  # the reloading tab is told why it is signed out
    with pytest.raises(SessionEnded):
        auth.cookie_code(actor)


@pytest.mark.parametrize(
    ("raw", "address", "bucket"),
    [
        ("10.1.2.3", "10.1.2.3", "10.1.2.3"),
        ("::ffff:10.1.2.3", "10.1.2.3", "10.1.2.3"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("unknown", None, "unknown"),
        (None, None, "unknown"),
        ("10.0.0.1, 10.0.0.2", None, "unknown"),
    ],
)
def test_client_addresses_and_their_throttle_buckets(raw, address, bucket):
    assert client_address(raw) == address
    assert client_bucket(raw) == bucket

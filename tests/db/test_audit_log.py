"""The audit log cannot be rewritten through the app's connection, and its hash chain shows any rewrite made
around it; on PostgreSQL the app's own role may only insert and read it."""

import threading
import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DatabaseError, ProgrammingError

from db.audit import AuditFilters, Who, audit_page, main, record, verify_chain
from db.migrate import alembic_config, upgrade_to_head
from db.schema import AuditEntry
from db.session import read_scope, session_scope
from domain import AuditAction
from tests.conftest import POSTGRES_ADMIN_URL


def append(count: int, name: str = "ana") -> None:
    for i in range(count):
        with session_scope() as session:
            record(session=session, action=AuditAction.EXPORT, who=Who(1, name), target=f"report {i}", detail="x")


def chain() -> str:
    with read_scope() as session:
        return str(verify_chain(session=session))


def entry_ids() -> list[int]:
    with read_scope() as session:
        return list(session.scalars(select(AuditEntry.id).order_by(AuditEntry.id)))


def as_owner_without_triggers(url: str, statement: str) -> None:
    """Rewrite the log around the app, as someone holding the database file or the owner's role could."""
    engine = create_engine(url)
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            for trigger in ("audit_log_no_update", "audit_log_no_delete", "audit_log_no_replace"):
                connection.exec_driver_sql(f"DROP TRIGGER {trigger}")
        else:
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")  # no triggers fire
        connection.exec_driver_sql(statement)
    engine.dispose()


def test_an_insert_or_replace_or_an_upsert_over_an_entry_is_refused(any_db_url):
    append(1)
    [entry_id] = entry_ids()
    columns = "(id, at, action, entry_hash) VALUES (:id, '2026-01-01 00:00:00', 'export', 'f')"
    statements = [f"INSERT INTO audit_log {columns} ON CONFLICT (id) DO UPDATE SET detail = 'rewritten'"]
    if any_db_url.startswith("sqlite"):
        # SQLite's REPLACE deletes the row it replaces without firing delete triggers (migration 0004 closes it).
        statements += [f"INSERT OR REPLACE INTO audit_log {columns}", f"REPLACE INTO audit_log {columns}"]
    for statement in statements:
        with pytest.raises(DatabaseError, match="append-only"), session_scope() as session:
            session.execute(text(statement), {"id": entry_id})
    with read_scope() as session:
        assert session.scalar(select(AuditEntry.detail)) == "x"
    assert chain().startswith("audit log intact: 1 entries")


@pytest.mark.postgres
def test_truncate_is_refused_on_postgresql(postgres_url):
    append(2)
    with pytest.raises(DatabaseError, match="append-only"), session_scope() as session:
        session.execute(text("TRUNCATE audit_log"))
    assert len(entry_ids()) == 2


@pytest.mark.parametrize(
    ("rewrite", "named"),
    [
        ("UPDATE audit_log SET detail = 'nothing to see' WHERE id = {second}", "entry {second} was changed"),
        ("DELETE FROM audit_log WHERE id = {second}", "entry {third} does not link"),
        (
            "INSERT INTO audit_log (id, at, action, username, entry_hash, prev_hash) "
            "SELECT {second} + 1000, at, action, 'mallory', entry_hash, prev_hash FROM audit_log WHERE id = {second}",
            "entry {slipped} does not link",
        ),
    ],
    ids=["changed", "removed", "slipped-in"],
)
def test_the_chain_names_the_first_entry_changed_removed_or_slipped_in(any_db_url, rewrite, named):
    append(4)
    first, second, third, _ = entry_ids()
    assert chain() == "audit log intact: 4 entries, each chained to the one before"
    as_owner_without_triggers(any_db_url, rewrite.format(second=second))
    assert named.format(second=second, third=third, slipped=second + 1000) in chain()


def test_the_verify_command_says_whether_the_chain_holds(db_url, capsys):
    append(3)
    assert main(["verify"]) == 0
    assert "intact: 3 entries" in capsys.readouterr().out
    as_owner_without_triggers(db_url, f"UPDATE audit_log SET target = 'report 9' WHERE id = {entry_ids()[0]}")
    assert main(["verify"]) == 1
    assert f"entry {entry_ids()[0]} was changed" in capsys.readouterr().err


@pytest.mark.postgres
def test_parallel_appends_on_postgresql_keep_one_chain(postgres_url):
    threads = [threading.Thread(target=append, args=(10, f"user{i}")) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert chain() == "audit log intact: 60 entries, each chained to the one before"


def test_migrating_a_log_written_before_the_chain_chains_its_entries(any_db_url):
    config = alembic_config(any_db_url)
    command.downgrade(config, "0003")
    engine = create_engine(any_db_url)
    with engine.begin() as connection:
        for i in range(3):
            connection.execute(
                text("INSERT INTO audit_log (at, username, action, detail) VALUES (:at, 'ana', 'export', :d)"),
                {"at": f"2026-12-0{i + 1} 10:00:00.123456", "d": f"old entry {i}"},
            )
    engine.dispose()
    upgrade_to_head(any_db_url)
    append(1)
    assert chain() == "audit log intact: 4 entries, each chained to the one before"
    with pytest.raises(DatabaseError, match="append-only"), session_scope() as session:
        session.execute(text("UPDATE audit_log SET detail = 'y'"))


@pytest.mark.postgres
def test_the_apps_own_role_may_only_insert_into_and_read_the_audit_log(postgres_url, monkeypatch):
    from db.session import reset_engine
    from services.auth import sign_in
    from settings import get_settings
    from tests.users import PASSWORD, make_actor

    role = f"brainmri_app_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
    app_url = postgres_url.replace("//postgres@", f"//{role}@")
    try:
        upgrade_to_head(postgres_url, app_url=app_url)  # what `make migrate` does with MIGRATION_DATABASE_URL set
        monkeypatch.setenv("DATABASE_URL", app_url)
        get_settings.cache_clear()
        reset_engine()
        make_actor("clinician", "nina")
        assert sign_in("nina", PASSWORD).username == "nina"  # the app works: users, sessions, throttle, the log
        for statement in (
            "UPDATE audit_log SET detail = 'y'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
            "DROP TRIGGER audit_log_append_only ON audit_log",
            "UPDATE app_secrets SET value = 'known'",
            "DELETE FROM alembic_version",
        ):
            with pytest.raises(ProgrammingError, match="permission denied|must be owner"), session_scope() as s:
                s.execute(text(statement))
        with read_scope() as session:
            actions = [r.action for r in audit_page(session=session, filters=AuditFilters(), per_page=10)]
        assert actions == ["sign_in"]
        assert chain() == "audit log intact: 1 entries, each chained to the one before"
    finally:
        reset_engine()
        owner = create_engine(postgres_url)
        with owner.begin() as connection:
            connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
        owner.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP ROLE "{role}"')
        admin.dispose()

"""The Alembic migrations build exactly the schema of db/schema.py, and undo it."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.migrate import downgrade_to_base, upgrade_to_head
from db.schema import Base
from db.session import make_engine


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_builds_exactly_the_schema(any_db_url):
    assert _tables(any_db_url) == set(Base.metadata.tables) | {"alembic_version"}
    assert _differences(any_db_url) == []


def test_downgrade_drops_every_table_and_upgrade_rebuilds_them(any_db_url):
    downgrade_to_base(any_db_url)
    assert _tables(any_db_url) == {"alembic_version"}
    upgrade_to_head(any_db_url)
    assert _differences(any_db_url) == []


def test_upgrade_of_a_database_at_head_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade_to_head(url)
    upgrade_to_head(url)
    assert _differences(url) == []


def _at(url: str, revision: str) -> None:
    from alembic import command

    from db.migrate import alembic_config

    command.upgrade(alembic_config(url), revision)


def _execute(url: str, *statements: str) -> list[tuple]:
    """Run `statements` in one transaction; the rows of the last one."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements[:-1]:
                connection.execute(text(statement))
            result = connection.execute(text(statements[-1]))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_rebuilding_tables_keeps_the_rows_of_the_tables_that_refer_to_them(tmp_path):
    """SQLite rebuilds a table to change it, dropping the old one: with foreign keys enforced that would empty
    every table referring to it (scans under patients, batch items under jobs)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _at(url, "0001")
    day = "'2024-01-02 03:04:05'"
    _execute(
        url,
        f"INSERT INTO patients (id, mrn, created_at) VALUES (1, 'P-1', {day})",
        "INSERT INTO jobs (id, kind, status, params, progress_current, progress_total, cancel_requested, attempts, "
        f"created_at) VALUES (1, 'batch', 'succeeded', '{{}}', 1, 1, 0, 1, {day})",
        "INSERT INTO scans (id, patient_id, sha256, file_path, original_name, source, job_id, width, height, "
        f"image_format, created_at) VALUES (1, 1, 'ab', '/s/ab.png', 'a.png', 'batch', 1, 8, 8, 'PNG', {day})",
        "INSERT INTO batch_items (id, job_id, rel_path, status, patient_mrn, scan_id, needs_review, created_at) "
        f"VALUES (1, 1, 'a.png', 'done', 'P-1', 1, 0, {day})",
    )
    _at(url, "0003")
    assert _execute(
        url,
        "SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM scans), (SELECT count(*) FROM batch_items), "
        "(SELECT job_id FROM scans)",
    ) == [(1, 1, 1, 1)]

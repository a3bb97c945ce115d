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

"""Alembic environment: migrates the database named by settings (or by the caller of db.migrate)."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Engine, event

from db.schema import Base
from db.session import make_engine
from settings import get_settings

config = context.config
# Only the `alembic` command line configures logging; a migration run from the app or a test must not
# replace the logging set up by its host process.
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    return config.attributes.get("url") or get_settings().migration_url


def run_migrations_offline() -> None:
    """Write the SQL to stdout instead of running it (`alembic upgrade head --sql`)."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _without_foreign_keys(engine: Engine) -> None:
    """On SQLite, migrate with foreign keys off, as SQLite's own procedure for schema changes says: batch mode
    rebuilds a table by dropping it, and a drop with foreign keys on first deletes its rows, cascading into the
    tables that refer to it (a rebuilt jobs table would empty batch_items). They are checked once done."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _off(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Runs after make_engine's own hook, which turns them on; outside any transaction, where it takes effect.
        dbapi_conn.execute("PRAGMA foreign_keys=OFF")


def _check_foreign_keys(connection) -> None:  # type: ignore[no-untyped-def]
    if connection.dialect.name == "sqlite" and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
        raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    _without_foreign_keys(engine)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
                _check_foreign_keys(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

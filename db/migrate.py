"""Bring a database to the newest schema with Alembic: `python -m db.migrate`.

Migrations connect with MIGRATION_DATABASE_URL when it is set, else DATABASE_URL. On PostgreSQL, when the two
name different roles, the app's role (DATABASE_URL's) is then granted what the app needs and no more: it reads
and writes the tables, but may only insert into and read the audit log, only read the app's key and the schema
version, and owns nothing, so it can neither drop the log's triggers nor alter a table.
"""

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url

from settings import ROOT, get_settings


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration for this repository, aimed at `url` (default: settings.database_url)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "db" / "migrations"))
    # Passed as an attribute, not a main option: the ini parser would choke on "%" in a password.
    config.attributes["url"] = url or get_settings().migration_url
    config.attributes["configure_logger"] = False
    return config


def upgrade_to_head(url: str | None = None, *, app_url: str | None = None) -> None:
    """Apply every migration not yet applied (a database already at head is left as it is), then give the app's
    role its rights. Without `url`, the settings' migration and app URLs are used."""
    command.upgrade(alembic_config(url), "head")
    migration_url = url or get_settings().migration_url
    app_url = app_url or (None if url else get_settings().database_url)
    if app_url is not None:
        grant_app_role(migration_url, app_url)


# What the app's role may do on each table beyond reading it; every other table: insert, update and delete.
APP_RIGHTS = {"audit_log": "INSERT", "app_secrets": "", "alembic_version": ""}


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def grant_app_role(migration_url: str, app_url: str) -> str | None:
    """On PostgreSQL, when `app_url` connects as another role than `migration_url`, set that role's rights on
    every table of the schema; returns the role's name, or None where there is nothing to do (SQLite, one role)."""
    from db.session import make_engine

    owner, app = make_url(migration_url), make_url(app_url)
    if owner.get_backend_name() != "postgresql" or not app.username or app.username == owner.username:
        return None
    role = _quoted(app.username)
    engine = make_engine(migration_url)
    try:
        with engine.begin() as connection:
            schema = connection.scalar(text("SELECT current_schema()"))
            tables = connection.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema})
            connection.execute(text(f"GRANT USAGE ON SCHEMA {_quoted(schema)} TO {role}"))
            for table in tables.all():
                rights = APP_RIGHTS.get(table, "INSERT, UPDATE, DELETE")
                connection.execute(text(f"REVOKE ALL ON {_quoted(table)} FROM {role}"))
                connection.execute(text(f"GRANT SELECT{', ' + rights if rights else ''} ON {_quoted(table)} TO {role}"))
            connection.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {_quoted(schema)} TO {role}"))
    finally:
        engine.dispose()
    return app.username


def downgrade_to_base(url: str | None = None) -> None:
    """Undo every migration (drops all tables)."""
    command.downgrade(alembic_config(url), "base")


def schema_problem(url: str | None = None) -> str | None:
    """Why the database cannot serve the app yet (unreachable, not migrated, behind), or None when it can."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import SQLAlchemyError

    from db.session import make_engine

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = make_engine(url or get_settings().database_url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        return f"it cannot be reached ({exc.__class__.__name__}: {getattr(exc, 'orig', exc)})"
    finally:
        engine.dispose()
    if current is None:
        return "it has no tables yet"
    if current != head:
        return f"its schema is at revision {current}, the app needs {head}"
    return None


if __name__ == "__main__":
    upgrade_to_head()
    print("database is at the newest schema")

"""Bring a database to the newest schema with Alembic: `python -m db.migrate`."""

from alembic import command
from alembic.config import Config

from settings import ROOT, get_settings


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration for this repository, aimed at `url` (default: settings.database_url)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "db" / "migrations"))
    # Passed as an attribute, not a main option: the ini parser would choke on "%" in a password.
    config.attributes["url"] = url or get_settings().database_url
    config.attributes["configure_logger"] = False
    return config


def upgrade_to_head(url: str | None = None) -> None:
    """Apply every migration not yet applied; a database already at head is left as it is."""
    command.upgrade(alembic_config(url), "head")


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

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


if __name__ == "__main__":
    upgrade_to_head()
    print("database is at the newest schema")

"""Schema migrations through Alembic: `gateway init` upgrades to head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from gateway import db

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.engine().url.render_as_string(hide_password=False))
    return cfg


def upgrade() -> None:
    with db.write_lock, db.engine().begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def revision(message: str) -> None:
    """Developers: autogenerate a migration from the models (`gateway db-revision MSG`)."""
    command.revision(alembic_config(), message=message, autogenerate=True)

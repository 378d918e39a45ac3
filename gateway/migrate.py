"""Schema migrations through Alembic: `gateway init` upgrades to head.

A server that finds its schema behind upgrades in a short-lived child process (`upgrade_in_child`),
so Alembic, Mako and Pygments (about 12 MB resident) never stay in the server. The database URL
reaches the child on its stdin, never in its argv or environment. If the child cannot run or fails,
the upgrade runs in this process instead (and raises what Alembic raises). An in-memory SQLite
database is upgraded in this process: a child would see a different database.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from gateway import db

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.engine().url.render_as_string(hide_password=False))
    return cfg


def upgrade() -> None:
    from alembic import command

    with db.write_lock, db.engine().begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def upgrade_in_child() -> None:
    url = db.engine().url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        upgrade()
        return
    root = Path(__file__).resolve().parent.parent
    try:
        with db.write_lock:
            proc = subprocess.run([sys.executable, "-m", "gateway.migrate"], cwd=root, capture_output=True,
                                  text=True, timeout=600, input=url.render_as_string(hide_password=False))
        if proc.returncode == 0:
            return
        log.warning("schema upgrade in a child process failed; upgrading here:\n%s", proc.stderr[-2000:])
    except (OSError, subprocess.SubprocessError):
        log.warning("schema upgrade in a child process could not run; upgrading here", exc_info=True)
    upgrade()


def revision(message: str) -> None:
    """Developers: autogenerate a migration from the models (`gateway db-revision MSG`)."""
    from alembic import command

    command.revision(alembic_config(), message=message, autogenerate=True)


if __name__ == "__main__":  # the child of upgrade_in_child: the URL on stdin
    db.init_engine(SimpleNamespace(database_url=sys.stdin.read().strip()))
    upgrade()

"""Schema migrations through Alembic: `gateway init` upgrades to head.

`schema_current()` answers whether there is anything to upgrade without importing Alembic (each
migration file's revision ids are read once per process and again only when the file changes).
A server that finds its schema behind upgrades in a short-lived child process (`upgrade_in_child`),
so Alembic, Mako and Pygments (about 12 MB resident) never stay in the server. The database URL
reaches the child on its stdin, never in its argv or environment. If the child cannot run or fails,
the upgrade runs in this process instead (and raises what Alembic raises). An in-memory SQLite
database is upgraded in this process: a child would see a different database.
"""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import text

from gateway import db

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# path -> ((mtime_ns, size), revisions, parents): each migration file is parsed once per version of it
_PARSED: dict[Path, tuple[tuple[int, int], set[str], set[str]]] = {}


def _revisions(path: Path) -> tuple[set[str], set[str]]:
    """The file's `revision` and `down_revision` values, parsed again only when the file changed."""
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _PARSED.get(path)
    if cached is not None and cached[0] == version:
        return cached[1], cached[2]
    revisions, parents = set(), set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("revision", "down_revision"):
                value = ast.literal_eval(node.value)
                values = value if isinstance(value, tuple | list) else (value,)
                (revisions if name == "revision" else parents).update(v for v in values if v)
    _PARSED[path] = (version, revisions, parents)
    return revisions, parents


def schema_current() -> bool:
    """Whether the database is at the newest migration, found without Alembic: its import alone
    costs a server about 12 MB for the life of the process. Any doubt answers False (upgrade)."""
    revisions, parents = set(), set()
    try:
        for path in (MIGRATIONS / "versions").glob("*.py"):
            mine, theirs = _revisions(path)
            revisions |= mine
            parents |= theirs
        heads = revisions - parents
        with db.engine().connect() as conn:
            current = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except Exception:
        return False
    return bool(heads) and current == heads


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

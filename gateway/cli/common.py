"""What every CLI command shares: a ready app, one short write transaction, errors as one line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy.orm import Session

from gateway import db
from gateway.services import tenancy
from gateway.services.errors import AdminError


def app(routes: bool = True):
    """The app a command runs in. `routes=False` (every command but serve): no API, console or
    public routes, and the server's start-up module only where there is a Redis to connect."""
    from gateway import create_app

    app = create_app(routes=routes)
    settings = app.extensions["settings"]
    if routes or settings.redis_url:  # without Redis a fresh process has nothing shared to connect
        from gateway import boot

        boot.connect_shared(settings)  # credit changes move the shared balance too
    return app


def ready_app():
    """An app whose database is at the schema head (every command may be the first one run);
    Alembic is imported only when there is something to upgrade."""
    from gateway import migrate

    app_ = app(routes=False)
    if not migrate.schema_current():
        migrate.upgrade()
    return app_


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@contextmanager
def writing() -> Iterator[Session]:
    """One short write transaction on a ready app; an AccountError ends the command with its message
    (the transaction rolled back)."""
    ready_app()
    try:
        with db.write_lock, db.session_scope() as session:
            yield session
    except AdminError as e:  # AccountError and the other services' errors
        fail(str(e))


def usd_micros(value: str) -> int:
    """The console's rules (finite, not negative, bounded), as an error line rather than a traceback."""
    try:
        return tenancy.parse_usd(value, allow_zero=True)
    except tenancy.AccountError as e:
        fail(str(e))

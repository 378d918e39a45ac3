"""Operator CLI: serve, init, admin, org, credits, key, dlp. Scripts depend on these names and outputs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import db
from gateway.ledger.pricing import usd
from gateway.models import ApiKey
from gateway.services import tenancy


def _app():
    from gateway import create_app

    return create_app()


def _ready_app():
    """An app whose database is at the schema head (every command may be the first one run)."""
    from gateway import migrate

    app = _app()
    migrate.upgrade()
    return app


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@contextmanager
def _writing() -> Iterator[Session]:
    """One short write transaction on a ready app; an AccountError ends the command with its message
    (the transaction rolled back)."""
    _ready_app()
    try:
        with db.write_lock, db.session_scope() as session:
            yield session
    except tenancy.AccountError as e:
        _fail(str(e))


def _usd(value: str) -> int:
    """The console's rules (finite, not negative, bounded), as an error line rather than a traceback."""
    try:
        return tenancy.parse_usd(value, allow_zero=True)
    except tenancy.AccountError as e:
        _fail(str(e))


@click.group()
def cli() -> None:
    """Gateway: a self-hosted LLM inference gateway."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "apscheduler"):  # migrations and job bookkeeping: only problems
        logging.getLogger(noisy).setLevel(logging.WARNING)


@cli.command()
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1, or GATEWAY_HOST).")
@click.option("--port", default=None, type=int, help="Port (default 8080, or GATEWAY_PORT).")
@click.option("--access-log/--no-access-log", default=False, help="Log every request line to stderr.")
def serve(host: str | None, port: int | None, access_log: bool) -> None:
    """Set up the instance if needed and serve the API and the console."""
    from gateway import boot, seed, server

    app = _app()
    settings = app.extensions["settings"]
    try:
        first = boot.prepare(app)
    except seed.ConfigError as e:
        _fail(str(e))
    host = host or settings.host
    port = port or settings.port
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if first is not None:
        _first_run(first, f"http://{shown}:{port}")
    click.echo(f"Serving on http://{shown if host != '0.0.0.0' else host}:{port}  (console: /admin)", err=True)
    server.serve(app, host, port, access_log=access_log)


def _first_run(first, url: str) -> None:
    from gateway import boot

    click.echo("\n  First run: Gateway is set up.\n")
    click.echo(f"  Console:   {url}/admin")
    click.echo(f"  Admin:     {first.email}")
    click.echo(f"  Password:  {first.password}   (one-time: the console asks for a new one at the first sign-in)")
    click.echo(f"  Org:       {first.org} (credits: ${boot.FIRST_CREDITS_USD})")
    click.echo(f"  API key:   {first.api_key}   (shown once)")
    click.echo(f"  Providers: {', '.join(first.providers) or 'none yet (set GATEWAY_CONFIG or add one in the console)'}")
    click.echo(f"\n  OpenAI SDK: OpenAI(base_url='{url}/v1', api_key='<API key>')\n")


@cli.command()
def init() -> None:
    """Create or upgrade the database schema, and load GATEWAY_CONFIG if set."""
    from gateway import boot, seed

    app = _app()
    try:
        first = boot.prepare(app)
    except seed.ConfigError as e:
        _fail(str(e))
    if first is not None:  # e.g. before `gunicorn app:app`: the one-time credentials must not be lost
        settings = app.extensions["settings"]
        _first_run(first, f"http://{settings.host}:{settings.port}")
    click.echo(f"database ready: {db.engine().url.render_as_string(hide_password=True)}")


@cli.group()
def admin() -> None:
    """Console users."""


@admin.command("create")
@click.option("--email", required=True)
@click.option("--password", default=None, help="Omit to get a printed one-time password.")
@click.option("--superadmin", is_flag=True, default=False)
def admin_create(email: str, password: str | None, superadmin: bool) -> None:
    """A console user. Without --password a one-time password is printed, changed at the first sign-in."""
    one_time = password is None
    password = password or tenancy.one_time_password()
    with _writing() as session:
        user = tenancy.create_admin(session, email, password, superadmin=superadmin, one_time=one_time)
    click.echo(f"created {'super-admin' if superadmin else 'admin'} {user.email}")
    if one_time:
        click.echo(f"one-time password: {password}   (changed at the first sign-in)")


@admin.command("reset-password")
@click.option("--email", required=True)
def admin_reset_password(email: str) -> None:
    """Print a new one-time password for a console user (also lifts a lockout and ends their sessions)."""
    with _writing() as session:
        password = tenancy.reset_password(session, email)
    click.echo(f"one-time password: {password}   (changed at the next sign-in)")


@cli.group()
def org() -> None:
    """Organizations."""


@org.command("create")
@click.argument("name")
@click.option("--credits", "credits_usd", default="0", help="Initial credits in USD.")
def org_create(name: str, credits_usd: str) -> None:
    micros = _usd(credits_usd)
    with _writing() as session:
        balance = tenancy.create_org(session, name, micros).credits_micros
    click.echo(f"created org {name} (credits: ${usd(balance)})")


@cli.group()
def credits() -> None:
    """Credits (1 credit = 1 USD)."""


@credits.command("add")
@click.option("--org", "org_name", required=True)
@click.option("--usd", "amount", required=True)
def credits_add(org_name: str, amount: str) -> None:
    micros = _usd(amount)
    with _writing() as session:
        o = tenancy.org_by_name(session, org_name)
        tenancy.add_credits(session, o, micros)
        balance = o.credits_micros
    click.echo(f"org {org_name}: credits ${usd(balance)}")


@cli.group()
def key() -> None:
    """API keys."""


@key.command("create")
@click.option("--org", "org_name", required=True)
@click.option("--name", default="")
@click.option("--scope", type=click.Choice(tenancy.SCOPES), default="inference")
def key_create(org_name: str, name: str, scope: str) -> None:
    """Create a key; prints the secret alone on stdout (it is not stored)."""
    with _writing() as session:
        new = tenancy.create_key(session, tenancy.org_by_name(session, org_name), name=name, scope=scope)
    click.echo(new.secret)


@key.command("revoke")
@click.option("--org", "org_name", required=True)
@click.argument("prefix")
def key_revoke(org_name: str, prefix: str) -> None:
    """Revoke the org's key whose displayed prefix (or id) is PREFIX."""
    with _writing() as session:
        o = tenancy.org_by_name(session, org_name)
        cond = ApiKey.id == int(prefix) if prefix.isdigit() else ApiKey.prefix == prefix
        k = session.scalar(select(ApiKey).where(ApiKey.org_id == o.id, cond))
        if k is None:
            raise tenancy.AccountError(f"no key {prefix} in org {org_name}")
        tenancy.revoke_key(session, k)
    click.echo(f"revoked {prefix}")


@key.command("list")
@click.option("--org", "org_name", required=True)
def key_list(org_name: str) -> None:
    """Keys of an org: id, prefix, name, scope, state (never the secret)."""
    _ready_app()
    with db.session_scope() as session:
        try:
            o = tenancy.org_by_name(session, org_name)
        except tenancy.AccountError as e:
            _fail(str(e))
        for k in session.scalars(select(ApiKey).where(ApiKey.org_id == o.id).order_by(ApiKey.id)):
            state = "revoked" if k.revoked_at else "active"
            click.echo(f"{k.id}\t{k.prefix}\t{k.name or '-'}\t{k.scope}\t{state}")


@cli.group()
def dlp() -> None:
    """Data protection (placeholders for personal data and secrets) per org or app."""


def _dlp_scope(session, org_name: str | None, app_slug: str | None) -> tuple[int, int | None]:
    from gateway.services import dlp as dlp_service

    if bool(org_name) == bool(app_slug):
        raise dlp_service.AdminError("Give exactly one of --org NAME or --app SLUG.")
    if org_name:
        return dlp_service.org_by_name(session, org_name).id, None
    app = dlp_service.app_by_slug(session, app_slug)
    return app.org_id, app.id


@dlp.command("enable")
@click.option("--org", "org_name", default=None, help="The org (its user keys and keys with no app).")
@click.option("--app", "app_slug", default=None, help="The app (its app keys).")
@click.option("--rule", "specs", multiple=True, metavar="RULE[:ACTION]",
              help="Repeatable; ACTION is redact (default), mask, block or log. "
                   "Default: every built-in pattern rule with redact.")
@click.option("--phone-region", "regions", multiple=True, metavar="CC",
              help="Repeatable: countries whose national phone formats are recognised "
                   "(default US GB DE FR ES IT NL IN BR AU; +international numbers always are).")
def dlp_enable(org_name: str | None, app_slug: str | None, specs: tuple[str, ...], regions: tuple[str, ...]) -> None:
    from gateway.services import dlp as dlp_service

    _ready_app()
    try:
        with db.write_lock, db.session_scope() as session:
            org_id, app_id = _dlp_scope(session, org_name, app_slug)
            row = dlp_service.enable(session, dlp_service.CLI, org_id, app_id, dlp_service.parse_specs(specs),
                                     list(regions) or None)
            rules = ", ".join(f"{k}:{v}" for k, v in sorted(row.rules.items()))
    except dlp_service.AdminError as e:
        _fail(str(e))
    click.echo(f"data protection on for {'org ' + org_name if org_name else 'app ' + app_slug}: {rules}")


@dlp.command("disable")
@click.option("--org", "org_name", default=None)
@click.option("--app", "app_slug", default=None)
def dlp_disable(org_name: str | None, app_slug: str | None) -> None:
    from gateway.services import dlp as dlp_service

    _ready_app()
    try:
        with db.write_lock, db.session_scope() as session:
            org_id, app_id = _dlp_scope(session, org_name, app_slug)
            dlp_service.disable(session, dlp_service.CLI, org_id, app_id)
    except dlp_service.AdminError as e:
        _fail(str(e))
    click.echo(f"data protection off for {'org ' + org_name if org_name else 'app ' + app_slug}")


@dlp.command("status")
def dlp_status() -> None:
    """One line per org and app: scope, on/off, rules (an app without its own setting follows its org)."""
    from gateway.services import dlp as dlp_service

    _ready_app()
    with db.session_scope() as session:
        for s in dlp_service.status(session, dlp_service.CLI):
            scope = f"org {s.org_name}" if s.app_id is None else f"app {s.org_name}/{s.app_name}"
            state = ("on" if s.enabled else "off") + (" (follows org)" if s.inherited else "")
            rules = ", ".join(f"{k}:{v}" for k, v in sorted(s.rules.items())) or "-"
            last = s.last_activity.isoformat(timespec="seconds") if s.last_activity else "-"
            click.echo(f"{scope}\t{state}\t{rules}\tlast activity {last}")


@cli.command("check-config")
@click.argument("path")
def check_config(path: str) -> None:
    """Validate a GATEWAY_CONFIG file without applying it."""
    from pathlib import Path

    from gateway import seed

    try:
        config = seed.load_file(Path(path))
    except seed.ConfigError as e:
        _fail(str(e))
    click.echo(f"ok: {len(config.get('providers', []))} providers, {len(config.get('models', []))} models")


@cli.command("db-revision", hidden=True)
@click.argument("message")
def db_revision(message: str) -> None:
    """Developers: autogenerate a schema migration from the models."""
    from gateway import migrate

    _app()
    migrate.revision(message)

"""Operator CLI: serve, init, admin, user, app, org, credits, key, budget, dlp, reconcile. Scripts
depend on these names and outputs. Each area's commands live in their own module (people, money,
keys, dlp), sharing common.py; this module holds the group, serving and setup."""

from __future__ import annotations

import logging

import click

from gateway import db
from gateway.cli import common, dlp, keys, money, people


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

    app = common.app()
    settings = app.extensions["settings"]
    try:
        first = boot.prepare(app)
    except seed.ConfigError as e:
        common.fail(str(e))
    host = host or settings.host
    port = port or settings.port
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if first is not None:
        _first_run(first, f"http://{shown}:{port}")
    from gateway.services import ollama

    if found := ollama.detect(settings):  # ~300 ms at most; offered in the console, never added unasked
        click.echo(f"Ollama detected at {found.url} ({len(found.models)} models): add it in the console, "
                   f"Settings > Ollama (http://{shown}:{port}/admin/ollama)", err=True)
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

    app = common.app(routes=False)
    try:
        first = boot.prepare(app)
    except seed.ConfigError as e:
        common.fail(str(e))
    if first is not None:  # e.g. before `gunicorn app:app`: the one-time credentials must not be lost
        settings = app.extensions["settings"]
        _first_run(first, f"http://{settings.host}:{settings.port}")
    click.echo(f"database ready: {db.engine().url.render_as_string(hide_password=True)}")


@cli.command("check-config")
@click.argument("path")
def check_config(path: str) -> None:
    """Validate a GATEWAY_CONFIG file without applying it."""
    from pathlib import Path

    from gateway import seed

    try:
        config = seed.load_file(Path(path))
    except seed.ConfigError as e:
        common.fail(str(e))
    click.echo(f"ok: {len(config.get('providers', []))} providers, {len(config.get('models', []))} models")


@cli.command("db-revision", hidden=True)
@click.argument("message")
def db_revision(message: str) -> None:
    """Developers: autogenerate a schema migration from the models."""
    from gateway import migrate

    common.app()
    migrate.revision(message)


for group in (people.admin, people.user, people.app_group, money.org, money.credits, keys.key, money.reconcile,
              money.budget, money.plan, dlp.dlp):
    cli.add_command(group)

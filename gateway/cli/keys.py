"""`gateway key`: API keys (the secret is printed once, at creation)."""

from __future__ import annotations

import click
from sqlalchemy import select

from gateway import db
from gateway.cli import common
from gateway.models import ApiKey
from gateway.services import tenancy


@click.group()
def key() -> None:
    """API keys."""


@key.command("create")
@click.option("--org", "org_name", required=True)
@click.option("--name", default="")
@click.option("--scope", type=click.Choice(tenancy.SCOPES), default="inference")
@click.option("--user", "user_email", default=None, help="The org's user the key belongs to.")
@click.option("--app", "app_slug", default=None, help="The org's app the key belongs to.")
def key_create(org_name: str, name: str, scope: str, user_email: str | None, app_slug: str | None) -> None:
    """Create a key; prints the secret alone on stdout (it is not stored)."""
    if user_email and app_slug:
        common.fail("a key belongs to one user or one app: give --user or --app, not both")
    with common.writing() as session:
        o = tenancy.org_by_name(session, org_name)
        user_id = tenancy.user_in_org(session, o, user_email).id if user_email else None
        app_id = tenancy.app_by_slug(session, o, app_slug).id if app_slug else None
        new = tenancy.create_key(session, o, name=name, scope=scope, user_id=user_id, app_id=app_id)
    click.echo(new.secret)


@key.command("revoke")
@click.option("--org", "org_name", required=True)
@click.argument("prefix")
def key_revoke(org_name: str, prefix: str) -> None:
    """Revoke the org's key whose displayed prefix (or id) is PREFIX."""
    with common.writing() as session:
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
    common.ready_app()
    with db.session_scope() as session:
        try:
            o = tenancy.org_by_name(session, org_name)
        except tenancy.AccountError as e:
            common.fail(str(e))
        for k in session.scalars(select(ApiKey).where(ApiKey.org_id == o.id).order_by(ApiKey.id)):
            state = "revoked" if k.revoked_at else "active"
            click.echo(f"{k.id}\t{k.prefix}\t{k.name or '-'}\t{k.scope}\t{state}")

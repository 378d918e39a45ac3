"""`gateway admin`, `gateway user` and `gateway app`: the people and apps behind keys."""

from __future__ import annotations

import click

from gateway.cli import common
from gateway.services import tenancy


@click.group()
def admin() -> None:
    """Console users."""


@admin.command("create")
@click.option("--email", required=True)
@click.option("--password", default=None, help="Omit to get a printed one-time password.")
@click.option("--superadmin", is_flag=True, default=False, help="Sees and manages every org.")
@click.option("--org", "org_name", default=None, help="The org of an org-admin or member.")
@click.option("--role", type=click.Choice(["org-admin", "member"]), default="org-admin")
def admin_create(email: str, password: str | None, superadmin: bool, org_name: str | None, role: str) -> None:
    """A console user: --superadmin, or --org NAME with --role org-admin|member. Without --password a
    one-time password is printed, changed at the first sign-in."""
    if superadmin and org_name:
        common.fail("a super-admin belongs to no org: give --superadmin or --org, not both")
    one_time = password is None
    password = password or tenancy.one_time_password()
    with common.writing() as session:
        org_id = tenancy.org_by_name(session, org_name).id if org_name else None
        user = tenancy.create_admin(session, email, password, superadmin=superadmin, org_id=org_id,
                                    role=None if superadmin else role, one_time=one_time)
        shown = user.role
    if superadmin:
        click.echo(f"created super-admin {user.email}")
    else:
        click.echo(f"created {shown} {user.email} in org {org_name}")
    if one_time:
        click.echo(f"one-time password: {password}   (changed at the first sign-in)")


@click.group()
def user() -> None:
    """People in an org: sign-in, keys of their own, weekly caps."""


@user.command("create")
@click.option("--org", "org_name", required=True)
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(["org-admin", "member"]), default="member")
@click.option("--weekly-cap", "weekly_cap", default=None, help="A hard weekly budget in USD.")
def user_create(org_name: str, email: str, role: str, weekly_cap: str | None) -> None:
    """Create a user; prints their one-time password alone on stdout."""
    cap = common.usd_micros(weekly_cap) if weekly_cap is not None else None
    if cap == 0:
        common.fail("the weekly cap must be above $0 (leave it out for none)")
    with common.writing() as session:
        new = tenancy.create_user(session, tenancy.org_by_name(session, org_name), email, role=role,
                                  weekly_cap_micros=cap)
    click.echo(f"created {role} {new.user.email} in org {org_name} (one-time password below)", err=True)
    click.echo(new.password)


def _set_user_status(org_name: str, email: str, active: bool) -> None:
    with common.writing() as session:
        u = tenancy.user_in_org(session, tenancy.org_by_name(session, org_name), email)
        tenancy.set_user_status(session, u, active)
    click.echo(f"{'enabled' if active else 'disabled'} {email}")


@user.command("disable")
@click.option("--org", "org_name", required=True)
@click.option("--email", required=True)
def user_disable(org_name: str, email: str) -> None:
    """Disable a user: no sign-in, and their keys answer 401 within a second."""
    _set_user_status(org_name, email, False)


@user.command("enable")
@click.option("--org", "org_name", required=True)
@click.option("--email", required=True)
def user_enable(org_name: str, email: str) -> None:
    _set_user_status(org_name, email, True)


@click.group("app")
def app_group() -> None:
    """Apps: programs calling the API for an org."""


@app_group.command("create")
@click.option("--org", "org_name", required=True)
@click.option("--slug", required=True)
@click.option("--name", default="")
@click.option("--contact", default="", help="Contact email.")
def app_create(org_name: str, slug: str, name: str, contact: str) -> None:
    with common.writing() as session:
        a = tenancy.create_app(session, tenancy.org_by_name(session, org_name), slug, name=name,
                               contact_email=contact)
    click.echo(f"created app {a.slug} in org {org_name}")


def _set_app_active(org_name: str, slug: str, active: bool) -> None:
    with common.writing() as session:
        a = tenancy.app_by_slug(session, tenancy.org_by_name(session, org_name), slug)
        tenancy.set_app_active(session, a, active)
    click.echo(f"{'enabled' if active else 'disabled'} app {slug}")


@app_group.command("disable")
@click.option("--org", "org_name", required=True)
@click.option("--slug", required=True)
def app_disable(org_name: str, slug: str) -> None:
    """Deactivate an app: its keys answer 401 within a second."""
    _set_app_active(org_name, slug, False)


@app_group.command("enable")
@click.option("--org", "org_name", required=True)
@click.option("--slug", required=True)
def app_enable(org_name: str, slug: str) -> None:
    _set_app_active(org_name, slug, True)


@app_group.command("deferral")
@click.option("--org", "org_name", required=True)
@click.option("--slug", required=True)
@click.option("--seconds", required=True, help="Seconds (1 to 2592000), or 'never'.")
def app_deferral(org_name: str, slug: str, seconds: str) -> None:
    """Defer the app's chat requests without x-gateway-deadline as if they sent this many seconds."""
    from gateway.services import webhooks

    with common.writing() as session:
        a = tenancy.app_by_slug(session, tenancy.org_by_name(session, org_name), slug)
        value = webhooks.set_deferral(session, a, seconds, actor="cli")
    click.echo(f"app {slug}: default deferral {'never' if value is None else f'{value} s'}")


@app_group.command("webhook")
@click.option("--org", "org_name", required=True)
@click.option("--slug", required=True)
@click.option("--url", required=True, help="http(s) URL for deferred results; '' to remove the webhook.")
def app_webhook(org_name: str, slug: str, url: str) -> None:
    """Set where the app's deferred results are POSTed; the first URL prints the signing secret once."""
    from gateway.services import webhooks

    settings = common.ready_app().extensions["settings"]
    with common.writing() as session:
        a = tenancy.app_by_slug(session, tenancy.org_by_name(session, org_name), slug)
        secret = webhooks.set_webhook(session, a, url, settings.secret_key, settings.webhook_allow_private,
                                      actor="cli")
        shown = a.webhook_url
    click.echo(f"app {slug}: webhook {shown or 'removed'}")
    if secret:
        click.echo(f"signing secret: {secret}   (shown once; {webhooks.SIGNATURE_HEADER} is sha256=HMAC of the body)")


@app_group.command("webhook-secret")
@click.option("--org", "org_name", required=True)
@click.option("--slug", required=True)
def app_webhook_secret(org_name: str, slug: str) -> None:
    """Replace the app's webhook signing secret; prints the new one once."""
    from gateway.services import webhooks

    settings = common.ready_app().extensions["settings"]
    with common.writing() as session:
        a = tenancy.app_by_slug(session, tenancy.org_by_name(session, org_name), slug)
        secret = webhooks.rotate_secret(session, a, settings.secret_key, actor="cli")
    click.echo(f"signing secret: {secret}   (shown once)")


@admin.command("reset-password")
@click.option("--email", required=True)
def admin_reset_password(email: str) -> None:
    """Print a new one-time password for a console user (also lifts a lockout and ends their sessions)."""
    with common.writing() as session:
        password = tenancy.reset_password(session, email)
    click.echo(f"one-time password: {password}   (changed at the next sign-in)")

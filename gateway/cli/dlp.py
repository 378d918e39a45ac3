"""`gateway dlp`: data protection per org or app."""

from __future__ import annotations

import click

from gateway import db
from gateway.cli import common


@click.group()
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

    common.ready_app()
    try:
        with db.write_lock, db.session_scope() as session:
            org_id, app_id = _dlp_scope(session, org_name, app_slug)
            row = dlp_service.enable(session, dlp_service.CLI, org_id, app_id, dlp_service.parse_specs(specs),
                                     list(regions) or None)
            rules = ", ".join(f"{k}:{v}" for k, v in sorted(row.rules.items()))
    except dlp_service.AdminError as e:
        common.fail(str(e))
    click.echo(f"data protection on for {'org ' + org_name if org_name else 'app ' + app_slug}: {rules}")


@dlp.command("disable")
@click.option("--org", "org_name", default=None)
@click.option("--app", "app_slug", default=None)
def dlp_disable(org_name: str | None, app_slug: str | None) -> None:
    from gateway.services import dlp as dlp_service

    common.ready_app()
    try:
        with db.write_lock, db.session_scope() as session:
            org_id, app_id = _dlp_scope(session, org_name, app_slug)
            dlp_service.disable(session, dlp_service.CLI, org_id, app_id)
    except dlp_service.AdminError as e:
        common.fail(str(e))
    click.echo(f"data protection off for {'org ' + org_name if org_name else 'app ' + app_slug}")


@dlp.command("status")
def dlp_status() -> None:
    """One line per org and app: scope, on/off, rules (an app without its own setting follows its org)."""
    from gateway.services import dlp as dlp_service

    common.ready_app()
    with db.session_scope() as session:
        for s in dlp_service.status(session, dlp_service.CLI):
            scope = f"org {s.org_name}" if s.app_id is None else f"app {s.org_name}/{s.app_name}"
            state = ("on" if s.enabled else "off") + (" (follows org)" if s.inherited else "")
            rules = ", ".join(f"{k}:{v}" for k, v in sorted(s.rules.items())) or "-"
            last = s.last_activity.isoformat(timespec="seconds") if s.last_activity else "-"
            click.echo(f"{scope}\t{state}\t{rules}\tlast activity {last}")

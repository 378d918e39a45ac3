"""Operator CLI: serve, init, admin, user, app, org, credits, key, budget, dlp, reconcile. Scripts
depend on these names and outputs."""

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
from gateway.services import budgets as budget_service
from gateway.services import credits as credit_service
from gateway.services import plans as plan_service
from gateway.services import tenancy
from gateway.services.errors import AdminError


def _app():
    from gateway import boot, create_app

    app = create_app()
    boot.connect_shared(app.extensions["settings"])  # credit changes move the shared balance too
    return app


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
    except AdminError as e:  # AccountError and the other services' errors
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
@click.option("--superadmin", is_flag=True, default=False, help="Sees and manages every org.")
@click.option("--org", "org_name", default=None, help="The org of an org-admin or member.")
@click.option("--role", type=click.Choice(["org-admin", "member"]), default="org-admin")
def admin_create(email: str, password: str | None, superadmin: bool, org_name: str | None, role: str) -> None:
    """A console user: --superadmin, or --org NAME with --role org-admin|member. Without --password a
    one-time password is printed, changed at the first sign-in."""
    if superadmin and org_name:
        _fail("a super-admin belongs to no org: give --superadmin or --org, not both")
    one_time = password is None
    password = password or tenancy.one_time_password()
    with _writing() as session:
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


@cli.group()
def user() -> None:
    """People in an org: sign-in, keys of their own, weekly caps."""


@user.command("create")
@click.option("--org", "org_name", required=True)
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(["org-admin", "member"]), default="member")
@click.option("--weekly-cap", "weekly_cap", default=None, help="A hard weekly budget in USD.")
def user_create(org_name: str, email: str, role: str, weekly_cap: str | None) -> None:
    """Create a user; prints their one-time password alone on stdout."""
    cap = _usd(weekly_cap) if weekly_cap is not None else None
    if cap == 0:
        _fail("the weekly cap must be above $0 (leave it out for none)")
    with _writing() as session:
        new = tenancy.create_user(session, tenancy.org_by_name(session, org_name), email, role=role,
                                  weekly_cap_micros=cap)
    click.echo(f"created {role} {new.user.email} in org {org_name} (one-time password below)", err=True)
    click.echo(new.password)


def _set_user_status(org_name: str, email: str, active: bool) -> None:
    with _writing() as session:
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


@cli.group("app")
def app_group() -> None:
    """Apps: programs calling the API for an org."""


@app_group.command("create")
@click.option("--org", "org_name", required=True)
@click.option("--slug", required=True)
@click.option("--name", default="")
@click.option("--contact", default="", help="Contact email.")
def app_create(org_name: str, slug: str, name: str, contact: str) -> None:
    with _writing() as session:
        a = tenancy.create_app(session, tenancy.org_by_name(session, org_name), slug, name=name,
                               contact_email=contact)
    click.echo(f"created app {a.slug} in org {org_name}")


def _set_app_active(org_name: str, slug: str, active: bool) -> None:
    with _writing() as session:
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
@click.option("--plan", "plan_name", default=None, help="A plan from the config or the console.")
def org_create(name: str, credits_usd: str, plan_name: str | None) -> None:
    micros = _usd(credits_usd)
    with _writing() as session:
        o = tenancy.create_org(session, name, micros, plan=plan_name)
        balance = o.credits_micros
    click.echo(f"created org {name} (credits: ${usd(balance)})" + (f" on plan {plan_name}" if plan_name else ""))


@org.command("plan")
@click.option("--org", "org_name", required=True)
@click.option("--plan", "plan_name", required=True, help="A plan name, or 'none' for no plan limits.")
def org_plan(org_name: str, plan_name: str) -> None:
    """Put an org on a plan (its limits apply within a second)."""
    with _writing() as session:
        o = tenancy.org_by_name(session, org_name)
        plan = None if plan_name == "none" else plan_service.by_name(session, plan_name)
        plan_service.set_org_plan(session, o, plan)
    click.echo(f"org {org_name}: plan {plan_name}")


@org.command("pricing")
@click.option("--org", "org_name", required=True)
@click.option("--policy", type=click.Choice(credit_service.POLICIES), required=True)
@click.option("--percent", default=None, help="markup or discount percentage, e.g. 10")
@click.option("--fee", "fee_usd", default="0", help="byok: flat fee per request in USD.")
def org_pricing(org_name: str, policy: str, percent: str | None, fee_usd: str) -> None:
    """Set an org's pricing policy: list | markup P% | discount P% | byok (optional per-request fee)."""
    fee = _usd(fee_usd)
    with _writing() as session:
        credit_service.set_pricing(session, tenancy.org_by_name(session, org_name), policy, percent, fee)
    click.echo(f"org {org_name}: pricing {policy}" + (f" {percent}%" if percent else ""))


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


@credits.command("refund")
@click.option("--org", "org_name", required=True)
@click.option("--usd", "amount", required=True)
@click.option("--reason", required=True)
def credits_refund(org_name: str, amount: str, reason: str) -> None:
    """Give usage back to an org (recorded with its reason in the credit log)."""
    micros = _usd(amount)
    with _writing() as session:
        o = tenancy.org_by_name(session, org_name)
        credit_service.refund(session, o, micros, reason)
        balance = o.credits_micros
    click.echo(f"org {org_name}: credits ${usd(balance)}")


@credits.command("adjust")
@click.option("--org", "org_name", required=True)
@click.option("--usd", "amount", required=True, help="Positive adds, negative takes away.")
@click.option("--reason", required=True)
def credits_adjust(org_name: str, amount: str, reason: str) -> None:
    """Correct an org's balance either way (recorded with its reason in the credit log)."""
    _ready_app()
    try:
        micros = credit_service.parse_signed_usd(amount)
        with db.write_lock, db.session_scope() as session:
            o = tenancy.org_by_name(session, org_name)
            credit_service.adjust(session, o, micros, reason)
            balance = o.credits_micros
    except AdminError as e:
        _fail(str(e))
    click.echo(f"org {org_name}: credits ${usd(balance)}")


@credits.command("log")
@click.option("--org", "org_name", required=True)
@click.option("--limit", default=50, type=click.IntRange(1, 10_000))
def credits_log(org_name: str, limit: int) -> None:
    """The org's credit transactions, newest first: id, when, kind, signed USD, requests, who, why."""
    _ready_app()
    with db.session_scope() as session:
        try:
            o = tenancy.org_by_name(session, org_name)
        except AdminError as e:
            _fail(str(e))
        for t in credit_service.transactions(session, o.id, limit=limit):
            sign = "" if t.credit == credit_service.ORG else "-"
            click.echo(f"{t.id}\t{t.created_at:%Y-%m-%dT%H:%M:%S}\t{t.kind}\t{sign}{usd(t.amount_micros)}\t"
                       f"{t.requests}\t{t.actor or '-'}\t{t.reason or '-'}")


@cli.group()
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
        _fail("a key belongs to one user or one app: give --user or --app, not both")
    with _writing() as session:
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


@cli.command("reconcile")
@click.option("--day", required=True, help="The UTC day to reconcile, YYYY-MM-DD.")
@click.option("--provider", "providers", multiple=True, help="Only this provider (repeatable).")
def reconcile(day: str, providers: tuple[str, ...]) -> None:
    """Compare a day's ledger with each provider's own usage and cost reports; store and print the drift."""
    from datetime import date

    from gateway.ledger.pricing import usd
    from gateway.services import reconciliation as reconciling

    try:
        which = date.fromisoformat(day)
    except ValueError:
        _fail(f"--day must be YYYY-MM-DD, not '{day}'")
    app = _ready_app()
    with app.app_context(), db.write_lock, db.session_scope() as session:
        lines = reconciling.reconcile(session, which, app.extensions["settings"].secret_key, list(providers) or None)
        for line in lines:
            theirs = "-" if line.their_cost_micros is None else usd(line.their_cost_micros)
            click.echo(f"{line.day} {line.provider} {line.model or '(none)'}: requests {line.our_requests}/"
                       f"{'-' if line.their_requests is None else line.their_requests} tokens {line.our_tokens}/"
                       f"{'-' if line.their_tokens is None else line.their_tokens} usd {usd(line.our_cost_micros)}/"
                       f"{theirs} drift {line.drift * 100:.2f}%{' FLAGGED' if line.flagged else ''}"
                       f"{' (' + line.note + ')' if line.note else ''}")
    if not lines:
        click.echo("nothing to reconcile: no provider of kind openai, anthropic or openrouter")


@cli.group()
def budget() -> None:
    """Spend caps per day, week or month on an org, user, app or key."""


def _selector(f):
    for opt in (click.option("--key", "key_id", default=None, help="A key id (see `gateway key list`)."),
                click.option("--app", "app_slug", default=None, help="An app slug (with --org)."),
                click.option("--user", "user_email", default=None, help="A user's email."),
                click.option("--org", "org_name", default=None, help="The org (alone: the whole org).")):
        f = opt(f)
    return f


def _target(session, org_name, user_email, app_slug, key_id):
    o = tenancy.org_by_name(session, org_name) if org_name else None
    return budget_service.target(session, o, user_email, app_slug, key_id)


@budget.command("set")
@_selector
@click.option("--usd", "amount", required=True)
@click.option("--window", type=click.Choice(["day", "week", "month"]), required=True)
@click.option("--soft", is_flag=True, default=False, help="Alert at 50/80/100% instead of refusing.")
@click.option("--rollover", is_flag=True, default=False, help="Unused cap carries into the next window.")
def budget_set(org_name, user_email, app_slug, key_id, amount: str, window: str, soft: bool, rollover: bool) -> None:
    micros = _usd(amount)
    with _writing() as session:
        t = _target(session, org_name, user_email, app_slug, key_id)
        budget_service.set_budget(session, t, micros, window, hard=not soft, rollover=rollover)
        label = f"{t.kind} {t.label}"
    click.echo(f"budget on {label}: ${usd(micros)} per {window}, {'soft' if soft else 'hard'}"
               + (", rollover" if rollover else ""))


@budget.command("clear")
@_selector
def budget_clear(org_name, user_email, app_slug, key_id) -> None:
    with _writing() as session:
        t = _target(session, org_name, user_email, app_slug, key_id)
        found = budget_service.clear_budget(session, t)
        label = f"{t.kind} {t.label}"
    click.echo(f"cleared the budget on {label}" if found else f"no budget on {label}")


@budget.command("list")
@click.option("--org", "org_name", required=True)
def budget_list(org_name: str) -> None:
    """The org's budgets: on, what, USD, window, hard|soft, rollover."""
    _ready_app()
    with db.session_scope() as session:
        try:
            o = tenancy.org_by_name(session, org_name)
        except AdminError as e:
            _fail(str(e))
        for v in budget_service.list_budgets(session, o.id):
            b = v.budget
            click.echo(f"{v.kind}\t{v.label or o.name}\t{usd(b.amount_micros)}\t{b.window}\t"
                       f"{'hard' if b.hard else 'soft'}\t{'rollover' if b.rollover else '-'}")


@cli.group()
def plan() -> None:
    """Plans: rate limits and key quotas an org subscribes to."""


@plan.command("list")
def plan_list() -> None:
    """Plans: name, rpm, tpm, key_rpm, key_tpm, max_keys (- is unlimited)."""
    _ready_app()
    with db.session_scope() as session:
        for p in plan_service.list_plans(session):
            limits = [p.rpm, p.tpm, p.key_rpm, p.key_tpm, p.max_keys]
            click.echo("\t".join([p.name, *("-" if v is None else str(v) for v in limits)]))


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

"""`gateway org`, `credits`, `budget`, `plan` and `reconcile`: orgs and their money."""

from __future__ import annotations

import click

from gateway import db
from gateway.cli import common
from gateway.ledger.pricing import usd
from gateway.services import budgets as budget_service
from gateway.services import credits as credit_service
from gateway.services import plans as plan_service
from gateway.services import tenancy
from gateway.services.errors import AdminError


@click.group()
def org() -> None:
    """Organizations."""


@org.command("create")
@click.argument("name")
@click.option("--credits", "credits_usd", default="0", help="Initial credits in USD.")
@click.option("--plan", "plan_name", default=None, help="A plan from the config or the console.")
def org_create(name: str, credits_usd: str, plan_name: str | None) -> None:
    micros = common.usd_micros(credits_usd)
    with common.writing() as session:
        o = tenancy.create_org(session, name, micros, plan=plan_name)
        balance = o.credits_micros
    click.echo(f"created org {name} (credits: ${usd(balance)})" + (f" on plan {plan_name}" if plan_name else ""))


@org.command("plan")
@click.option("--org", "org_name", required=True)
@click.option("--plan", "plan_name", required=True, help="A plan name, or 'none' for no plan limits.")
def org_plan(org_name: str, plan_name: str) -> None:
    """Put an org on a plan (its limits apply within a second)."""
    with common.writing() as session:
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
    fee = common.usd_micros(fee_usd)
    with common.writing() as session:
        credit_service.set_pricing(session, tenancy.org_by_name(session, org_name), policy, percent, fee)
    click.echo(f"org {org_name}: pricing {policy}" + (f" {percent}%" if percent else ""))


@click.group()
def credits() -> None:
    """Credits (1 credit = 1 USD)."""


@credits.command("add")
@click.option("--org", "org_name", required=True)
@click.option("--usd", "amount", required=True)
def credits_add(org_name: str, amount: str) -> None:
    micros = common.usd_micros(amount)
    with common.writing() as session:
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
    micros = common.usd_micros(amount)
    with common.writing() as session:
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
    common.ready_app()
    try:
        micros = credit_service.parse_signed_usd(amount)
        with db.write_lock, db.session_scope() as session:
            o = tenancy.org_by_name(session, org_name)
            credit_service.adjust(session, o, micros, reason)
            balance = o.credits_micros
    except AdminError as e:
        common.fail(str(e))
    click.echo(f"org {org_name}: credits ${usd(balance)}")


@credits.command("log")
@click.option("--org", "org_name", required=True)
@click.option("--limit", default=50, type=click.IntRange(1, 10_000))
def credits_log(org_name: str, limit: int) -> None:
    """The org's credit transactions, newest first: id, when, kind, signed USD, requests, who, why."""
    common.ready_app()
    with db.session_scope() as session:
        try:
            o = tenancy.org_by_name(session, org_name)
        except AdminError as e:
            common.fail(str(e))
        for t in credit_service.transactions(session, o.id, limit=limit):
            sign = "" if t.credit == credit_service.ORG else "-"
            click.echo(f"{t.id}\t{t.created_at:%Y-%m-%dT%H:%M:%S}\t{t.kind}\t{sign}{usd(t.amount_micros)}\t"
                       f"{t.requests}\t{t.actor or '-'}\t{t.reason or '-'}")


@click.command("reconcile")
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
        common.fail(f"--day must be YYYY-MM-DD, not '{day}'")
    app = common.ready_app()
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


@click.group()
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
    micros = common.usd_micros(amount)
    with common.writing() as session:
        t = _target(session, org_name, user_email, app_slug, key_id)
        budget_service.set_budget(session, t, micros, window, hard=not soft, rollover=rollover)
        label = f"{t.kind} {t.label}"
    click.echo(f"budget on {label}: ${usd(micros)} per {window}, {'soft' if soft else 'hard'}"
               + (", rollover" if rollover else ""))


@budget.command("clear")
@_selector
def budget_clear(org_name, user_email, app_slug, key_id) -> None:
    with common.writing() as session:
        t = _target(session, org_name, user_email, app_slug, key_id)
        found = budget_service.clear_budget(session, t)
        label = f"{t.kind} {t.label}"
    click.echo(f"cleared the budget on {label}" if found else f"no budget on {label}")


@budget.command("list")
@click.option("--org", "org_name", required=True)
def budget_list(org_name: str) -> None:
    """The org's budgets: on, what, USD, window, hard|soft, rollover."""
    common.ready_app()
    with db.session_scope() as session:
        try:
            o = tenancy.org_by_name(session, org_name)
        except AdminError as e:
            common.fail(str(e))
        for v in budget_service.list_budgets(session, o.id):
            b = v.budget
            click.echo(f"{v.kind}\t{v.label or o.name}\t{usd(b.amount_micros)}\t{b.window}\t"
                       f"{'hard' if b.hard else 'soft'}\t{'rollover' if b.rollover else '-'}")


@click.group()
def plan() -> None:
    """Plans: rate limits and key quotas an org subscribes to."""


@plan.command("list")
def plan_list() -> None:
    """Plans: name, rpm, tpm, key_rpm, key_tpm, max_keys (- is unlimited)."""
    common.ready_app()
    with db.session_scope() as session:
        for p in plan_service.list_plans(session):
            limits = [p.rpm, p.tpm, p.key_rpm, p.key_tpm, p.max_keys]
            click.echo("\t".join([p.name, *("-" if v is None else str(v) for v in limits)]))

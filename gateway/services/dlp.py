"""Data-protection settings and custom rules: the writes behind the console and the CLI, with audit.

Each write validates, writes, audits and announces "dlp" inside the caller's short transaction
(`with db.write_lock, db.session_scope() as s:`), so every server process reloads the compiled
policies within its sync interval (memo.py). AdminError (a message for the user) rolls back;
Forbidden is the 403 case: an org admin reaches only their own org's scopes, rules and activity.
Reads are scoped the same way: every query filters on the org ids the actor may see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.dlp import custom, detectors
from gateway.dlp.rules import ACTIONS, BUILTIN, DEFAULT_ACTION, UNAVAILABLE, parse_rule_spec
from gateway.memo import announce
from gateway.models import App, DlpCustomRule, DlpEvent, DlpRollup, DlpSetting, Org, utcnow
from gateway.services.errors import Actor, AdminError, require
from gateway.services.tenancy import audit


class CliActor:
    email, is_superadmin, org_id = "cli", True, None


CLI = CliActor()


# ---- lookups ------------------------------------------------------------------------------------

def app_by_slug(session: Session, slug: str) -> App:
    """An app by its slug where the column exists, else by name: one place to switch over."""
    column = App.slug if hasattr(App, "slug") else App.name
    found = session.scalars(select(App).where(column == slug)).all()
    if not found:
        raise AdminError(f"No app named '{slug}'.")
    if len(found) > 1:
        raise AdminError(f"Several apps are named '{slug}'; use the console to pick one.")
    return found[0]


def org_by_name(session: Session, name: str) -> Org:
    org = session.scalar(select(Org).where(Org.name == name))
    if org is None:
        raise AdminError(f"No org named '{name}'.")
    return org


def setting_for(session: Session, org_id: int, app_id: int | None) -> DlpSetting | None:
    q = select(DlpSetting).where(DlpSetting.org_id == org_id)
    q = q.where(DlpSetting.app_id.is_(None) if app_id is None else DlpSetting.app_id == app_id)
    return session.scalar(q)


def _scope_label(session: Session, org_id: int, app_id: int | None) -> str:
    org = session.get(Org, org_id)
    label = f"org {org.name if org else org_id}"
    if app_id is not None:
        app = session.get(App, app_id)
        label += f" / app {app.name if app else app_id}"
    return label


# ---- writes -------------------------------------------------------------------------------------

def enable(session: Session, actor: Actor, org_id: int, app_id: int | None = None,
           rules: dict[str, str] | None = None, regions: list[str] | None = None) -> DlpSetting:
    """Turn protection on for a scope. `rules` (rule id -> action) replaces the scope's rules;
    None keeps them, or for a scope without rules enables every built-in pattern rule with `redact`.
    `regions` (ISO country codes) are where national-format phone numbers are looked up."""
    require(actor, org_id, "data protection settings")
    _check_app(session, org_id, app_id)
    row = setting_for(session, org_id, app_id)
    if rules is not None:
        _check_rules(session, org_id, rules)
    if regions:
        regions = _check_regions(regions)
    if row is None:
        row = DlpSetting(org_id=org_id, app_id=app_id, enabled=True,
                         rules=rules if rules is not None else dict.fromkeys(BUILTIN, DEFAULT_ACTION))
        session.add(row)
    else:
        row.enabled = True
        if rules is not None:
            row.rules = dict(rules)
        elif not row.rules:  # e.g. an app turned off before it ever had rules
            row.rules = dict.fromkeys(BUILTIN, DEFAULT_ACTION)
    if regions:
        row.regions = regions
    row.updated_by = actor.email
    audit(session, actor.email, "dlp.enable", _scope_label(session, org_id, app_id),
          ", ".join(f"{k}:{v}" for k, v in sorted(row.rules.items())), org_id=org_id)
    announce(session, "dlp")
    return row


def disable(session: Session, actor: Actor, org_id: int, app_id: int | None = None) -> DlpSetting:
    """Turn protection off for a scope. An app's row stays (off), so the app no longer follows its org."""
    require(actor, org_id, "data protection settings")
    _check_app(session, org_id, app_id)
    row = setting_for(session, org_id, app_id)
    if row is None:
        row = DlpSetting(org_id=org_id, app_id=app_id, enabled=False, rules={})
        session.add(row)
    row.enabled = False
    row.updated_by = actor.email
    audit(session, actor.email, "dlp.disable", _scope_label(session, org_id, app_id), org_id=org_id)
    announce(session, "dlp")
    return row


def configure(session: Session, actor: Actor, org_id: int, app_id: int | None, enabled: bool,
              rules: dict[str, str], regions: list[str] | None = None) -> DlpSetting:
    """The console's scope form: on or off, the whole rule set, and the phone regions (empty or
    None: the defaults)."""
    require(actor, org_id, "data protection settings")
    _check_app(session, org_id, app_id)
    _check_rules(session, org_id, rules)
    regions = _check_regions(regions) if regions else None
    row = setting_for(session, org_id, app_id)
    if row is None:
        row = DlpSetting(org_id=org_id, app_id=app_id)
        session.add(row)
    row.enabled, row.rules, row.regions, row.updated_by = enabled, dict(rules), regions, actor.email
    audit(session, actor.email, "dlp.enable" if enabled else "dlp.disable", _scope_label(session, org_id, app_id),
          ", ".join(f"{k}:{v}" for k, v in sorted(rules.items())), org_id=org_id)
    announce(session, "dlp")
    return row


def set_rule(session: Session, actor: Actor, org_id: int, app_id: int | None, rule: str,
             action: str | None) -> DlpSetting:
    """One rule of a scope: an action, or None to turn the rule off."""
    require(actor, org_id, "data protection settings")
    _check_app(session, org_id, app_id)
    if action is not None:
        _check_rules(session, org_id, {rule: action})
    row = setting_for(session, org_id, app_id)
    if row is None:
        row = DlpSetting(org_id=org_id, app_id=app_id, enabled=False, rules={})
        session.add(row)
    rules = dict(row.rules or {})
    if action is None:
        rules.pop(rule, None)
    else:
        rules[rule] = action
    row.rules = rules
    row.updated_by = actor.email
    audit(session, actor.email, "dlp.rule", _scope_label(session, org_id, app_id), f"{rule}:{action or 'off'}",
          org_id=org_id)
    announce(session, "dlp")
    return row


def add_custom_rule(session: Session, actor: Actor, org_id: int, name: str, kind: str,
                    pattern: str) -> DlpCustomRule:
    require(actor, org_id, "data protection rules")
    try:
        custom.compile_rule(name, kind, pattern)
    except custom.CustomRuleError as e:
        raise AdminError(str(e)) from None
    if session.scalar(select(DlpCustomRule).where(DlpCustomRule.org_id == org_id, DlpCustomRule.name == name)):
        raise AdminError(f"This org already has a rule named '{name}'.")
    row = DlpCustomRule(org_id=org_id, name=name, kind=kind, pattern=pattern, created_by=actor.email)
    session.add(row)
    audit(session, actor.email, "dlp.custom_rule.add", f"custom:{name}", f"kind={kind}", org_id=org_id)
    announce(session, "dlp")
    return row


def delete_custom_rule(session: Session, actor: Actor, rule_id: int) -> None:
    row = session.get(DlpCustomRule, rule_id)
    if row is None:
        raise AdminError("No such rule.")
    require(actor, row.org_id, "data protection rules")
    rid = f"custom:{row.name}"
    for s in session.scalars(select(DlpSetting).where(DlpSetting.org_id == row.org_id)).all():
        if rid in (s.rules or {}):
            s.rules = {k: v for k, v in s.rules.items() if k != rid}
    session.delete(row)
    audit(session, actor.email, "dlp.custom_rule.delete", rid, org_id=row.org_id)
    announce(session, "dlp")


def test_pattern(name: str, kind: str, pattern: str, sample: str) -> list[tuple[int, int, str]]:
    """What a pattern matches in a sample (the console's test box); AdminError if unusable."""
    try:
        rule = custom.compile_rule(name or "test", kind or "CUSTOM", pattern)
        return custom.sample_matches(rule, sample)
    except (custom.CustomRuleError, custom.CustomRuleTimeout) as e:
        raise AdminError(str(e) or "The pattern is too slow on this sample.") from None


def _check_app(session: Session, org_id: int, app_id: int | None) -> None:
    if app_id is not None:
        app = session.get(App, app_id)
        if app is None or app.org_id != org_id:
            raise AdminError("That app does not belong to this org.")


def _check_rules(session: Session, org_id: int, rules: dict[str, str]) -> None:
    known = {f"custom:{n}" for n in session.scalars(select(DlpCustomRule.name).where(DlpCustomRule.org_id == org_id))}
    for rule, action in rules.items():
        if action not in ACTIONS:
            raise AdminError(f"Unknown action '{action}': use one of {', '.join(ACTIONS)}.")
        if rule in UNAVAILABLE:
            raise AdminError(f"Rule '{rule}' needs an NER model, which is not installed.")
        if rule not in BUILTIN and rule not in known:
            raise AdminError(f"Unknown rule '{rule}'.")


def _check_regions(regions: list[str]) -> list[str]:
    import phonenumbers

    out = [r.strip().upper() for r in regions if r.strip()]
    unknown = [r for r in out if r not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        raise AdminError(f"Unknown phone region {unknown[0]}: use ISO country codes such as US, GB, DE.")
    return out


def parse_specs(specs: tuple[str, ...] | list[str]) -> dict[str, str] | None:
    """CLI `--rule RULE[:ACTION]` options -> rules; None when none were given (the defaults)."""
    if not specs:
        return None
    rules = {}
    for spec in specs:
        try:
            rule, action = parse_rule_spec(spec)
        except ValueError as e:
            raise AdminError(str(e)) from None
        rules[rule] = action
    return rules


# ---- reads --------------------------------------------------------------------------------------

@dataclass
class ScopeStatus:
    org_id: int
    org_name: str
    app_id: int | None
    app_name: str
    enabled: bool
    rules: dict[str, str]
    inherited: bool  # an app without its own setting follows its org
    last_activity: datetime | None = None
    regions: tuple[str, ...] = field(default_factory=tuple)


def visible_orgs(session: Session, actor: Actor) -> list[Org]:
    q = select(Org).order_by(Org.name)
    if not actor.is_superadmin:
        q = q.where(Org.id == actor.org_id)
    return list(session.scalars(q).all())


def status(session: Session, actor: Actor) -> list[ScopeStatus]:
    """Every org the actor may see and each of its apps: status, rules, last activity."""
    orgs = visible_orgs(session, actor)
    ids = [o.id for o in orgs]
    settings = {(s.org_id, s.app_id): s for s in session.scalars(select(DlpSetting).where(DlpSetting.org_id.in_(ids)))}
    last = dict(session.execute(select(DlpEvent.org_id, func.max(DlpEvent.created_at))
                                .where(DlpEvent.org_id.in_(ids)).group_by(DlpEvent.org_id)).tuples().all())
    last_app = {(o, a): t for o, a, t in session.execute(
        select(DlpEvent.org_id, DlpEvent.app_id, func.max(DlpEvent.created_at))
        .where(DlpEvent.org_id.in_(ids), DlpEvent.app_id.is_not(None))
        .group_by(DlpEvent.org_id, DlpEvent.app_id)).tuples().all()}
    apps = session.scalars(select(App).where(App.org_id.in_(ids)).order_by(App.name)).all()
    out = []
    for o in orgs:
        s = settings.get((o.id, None))
        out.append(ScopeStatus(o.id, o.name, None, "", bool(s and s.enabled), dict(s.rules) if s else {}, False,
                               last.get(o.id), tuple(s.regions or ()) if s else ()))
        for a in (a for a in apps if a.org_id == o.id):
            own = settings.get((o.id, a.id))
            src = own or s
            out.append(ScopeStatus(o.id, o.name, a.id, a.name, bool(src and src.enabled),
                                   dict(src.rules) if src else {}, own is None, last_app.get((o.id, a.id))))
    return out


def custom_rules(session: Session, actor: Actor) -> list[DlpCustomRule]:
    ids = [o.id for o in visible_orgs(session, actor)]
    return list(session.scalars(select(DlpCustomRule).where(DlpCustomRule.org_id.in_(ids))
                                .order_by(DlpCustomRule.org_id, DlpCustomRule.name)).all())


def recent_activity(session: Session, actor: Actor, limit: int = 50) -> list[DlpEvent]:
    ids = [o.id for o in visible_orgs(session, actor)]
    return list(session.scalars(select(DlpEvent).where(DlpEvent.org_id.in_(ids))
                                .order_by(DlpEvent.created_at.desc(), DlpEvent.id.desc()).limit(limit)).all())


def rollups(session: Session, actor: Actor, days: int = 7) -> list[DlpRollup]:
    ids = [o.id for o in visible_orgs(session, actor)]
    since = (utcnow() - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    return list(session.scalars(select(DlpRollup).where(DlpRollup.org_id.in_(ids), DlpRollup.day >= since)
                                .order_by(DlpRollup.day.desc(), DlpRollup.rule)).all())


DEFAULT_REGIONS = detectors.DEFAULT_REGIONS

"""The console's grouped navigation, as data.

Each entry names an endpoint, its label and the least role that may open it. The header renders
only entries whose endpoint is registered (a page lands by registering its view; the nav needs no
other edit) and that the signed-in user's role reaches. Roles rank member < org-admin < super-admin;
pages still check access themselves, the nav only hides what would be refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, request

RANK = {"member": 0, "org-admin": 1, "super-admin": 2}


@dataclass(frozen=True, slots=True)
class Entry:
    endpoint: str
    label: str
    role: str = "org-admin"
    prefix: str = ""  # endpoints starting with this light the entry up (defaults to the endpoint)

    def active(self, endpoint: str | None) -> bool:
        return bool(endpoint) and endpoint.startswith(self.prefix or self.endpoint)


GROUPS: tuple[tuple[str, tuple[Entry, ...]], ...] = (
    ("Overview", (Entry("admin.home", "Home", prefix="admin.home"),
                  Entry("dashboard.home", "My dashboard", "member", "dashboard."))),
    ("Traffic", (Entry("admin.logs", "Gateway logs", prefix="admin.log"),
                 Entry("admin.usage", "Per-user usage", prefix="admin.usage"),
                 Entry("admin.error_reports", "Error reports", prefix="admin.error_report"))),
    ("Routing", (Entry("admin.models", "Models", prefix="admin.model"),
                 Entry("admin.aliases", "Model router", prefix="admin.alias"),
                 Entry("admin.agents", "Agents", prefix="admin.agent"),
                 Entry("admin.fallbacks", "Fallback chains", prefix="admin.fallback"),
                 Entry("admin.strategy", "Strategy", "super-admin", "admin.strategy"),
                 Entry("admin.access", "Access rules", prefix="admin.access"),
                 Entry("admin.load", "Provider load", prefix="admin.load"))),
    ("Spend", (Entry("admin.orgs", "Orgs", prefix="admin.org"),
               Entry("admin.users", "Users", prefix="admin.user"),
               Entry("admin.apps", "Apps", prefix="admin.app"),
               Entry("admin.plans", "Plans", prefix="admin.plan"),
               Entry("admin.budgets", "Budgets", prefix="admin.budget"),
               Entry("admin.credits", "Credits", prefix="admin.credit"),
               Entry("admin.savings", "Savings", prefix="admin.savings"),
               Entry("admin.batches", "Batches", prefix="admin.batch"),
               Entry("admin.reconciliation", "Reconciliation", "super-admin", "admin.reconciliation"))),
    ("Security", (Entry("admin.keys", "API keys", prefix="admin.key"),
                  Entry("admin.byok_keys", "BYOK keys", prefix="admin.byok"),
                  Entry("admin.dlp", "Data protection", prefix="admin.dlp"),
                  Entry("admin.audit_log", "Audit log", prefix="admin.audit"))),
    ("Settings", (Entry("admin.providers", "Providers and credentials", "super-admin", "admin.provider"),
                  Entry("admin.ollama", "Ollama", "super-admin", "admin.ollama"),
                  Entry("admin.features", "Features", "super-admin", "admin.feature"))),
)


def role_of(user) -> str:
    if getattr(user, "is_superadmin", False):
        return "super-admin"
    return getattr(user, "role", None) or "member"


def groups_for(user) -> list[tuple[str, list[tuple[Entry, bool]]]]:
    """The groups this user sees, each with (entry, is_active) pairs; empty groups are dropped."""
    rank = RANK.get(role_of(user), 0)
    known = current_app.view_functions
    here = request.endpoint
    out = []
    for title, entries in GROUPS:
        shown = [(e, e.active(here)) for e in entries if e.endpoint in known and RANK[e.role] <= rank]
        if shown:
            out.append((title, shown))
    return out

"""Typed ORM by aggregate: tenancy, catalog, ledger, logs, dlp."""

from gateway.models.base import Base, utcnow
from gateway.models.cache import CacheEntry, ConversationSummary, SemanticEntry
from gateway.models.catalog import Alias, Fallback, Model, Provider, Route
from gateway.models.dlp import DlpCustomRule, DlpEvent, DlpRollup, DlpSetting
from gateway.models.ledger import LedgerEntry, UsageRollup
from gateway.models.logs import AuditLog, ChangeEvent
from gateway.models.policy import AccessPolicy, AgentConfig, GatewaySetting, SavingsOverride
from gateway.models.responses import StoredResponse
from gateway.models.tenancy import ApiKey, App, CreditGrant, Org, User

__all__ = [
    "AccessPolicy", "AgentConfig", "CacheEntry", "ConversationSummary", "GatewaySetting", "SavingsOverride",
    "SemanticEntry", "UsageRollup",
    "DlpCustomRule", "DlpEvent", "DlpRollup", "DlpSetting",
    "Alias", "ApiKey", "App", "AuditLog", "Base", "ChangeEvent", "CreditGrant", "Fallback",
    "LedgerEntry", "Model", "Org", "Provider", "Route", "StoredResponse", "User", "utcnow",
]

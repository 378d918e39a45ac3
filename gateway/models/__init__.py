"""Typed ORM by aggregate: tenancy, catalog, ledger, logs, dlp, batch."""

from gateway.models.activity import ContentLog, ContentLogSetting, ErrorReport
from gateway.models.base import Base, utcnow
from gateway.models.batch import Batch, BatchFile, BatchPart, BatchRequest
from gateway.models.cache import CacheEntry, ConversationSummary, SemanticEntry
from gateway.models.catalog import Alias, Fallback, Model, Provider, Route
from gateway.models.deferred import DeferredRequest
from gateway.models.dlp import DlpCustomRule, DlpEvent, DlpRollup, DlpSetting
from gateway.models.jobs import JobRun
from gateway.models.ledger import LedgerEntry, PartyDayRollup, PartyRollup, UsageRollup
from gateway.models.logs import AuditLog, ChangeEvent
from gateway.models.money import ByokKey, ByokRejection, IdempotencyRecord, ReconciliationLine, TopupRequest
from gateway.models.policy import (
    AccessPolicy,
    AgentConfig,
    Budget,
    BudgetAlert,
    FeatureOptIn,
    GatewaySetting,
    Plan,
    SavingsOverride,
)
from gateway.models.responses import StoredResponse
from gateway.models.tenancy import ApiKey, App, CreditGrant, CreditTransaction, Org, User

__all__ = [
    "Batch", "BatchFile", "BatchPart", "BatchRequest", "DeferredRequest",
    "AccessPolicy", "AgentConfig", "Budget", "BudgetAlert", "FeatureOptIn", "CreditTransaction", "Plan", "CacheEntry",
    "ConversationSummary", "GatewaySetting", "SavingsOverride", "SemanticEntry", "UsageRollup",
    "ByokKey", "ByokRejection", "IdempotencyRecord", "PartyDayRollup", "PartyRollup", "ReconciliationLine",
    "DlpCustomRule", "DlpEvent", "DlpRollup", "DlpSetting", "ContentLog", "ContentLogSetting", "ErrorReport",
    "Alias", "ApiKey", "App", "AuditLog", "Base", "ChangeEvent", "CreditGrant", "Fallback",
    "JobRun", "LedgerEntry", "Model", "Org", "Provider", "Route", "StoredResponse", "TopupRequest", "User",
    "utcnow",
]

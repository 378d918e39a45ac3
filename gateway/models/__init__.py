"""Typed ORM by aggregate: tenancy, catalog, ledger, logs."""

from gateway.models.base import Base, utcnow
from gateway.models.catalog import Alias, Fallback, Model, Provider, Route
from gateway.models.ledger import LedgerEntry
from gateway.models.logs import AuditLog, ChangeEvent
from gateway.models.tenancy import ApiKey, App, CreditGrant, Org, User

__all__ = [
    "Alias", "ApiKey", "App", "AuditLog", "Base", "ChangeEvent", "CreditGrant", "Fallback",
    "LedgerEntry", "Model", "Org", "Provider", "Route", "User", "utcnow",
]

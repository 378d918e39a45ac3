"""What every console and CLI write shares: the error a user reads, the 403 case, and who is acting."""

from __future__ import annotations

from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

Row = TypeVar("Row")


class AdminError(ValueError):
    """A change that cannot be made; the message says why, for the person who asked."""


class Forbidden(AdminError):
    """The actor may not make this change (403)."""


class Actor(Protocol):
    email: str
    is_superadmin: bool
    org_id: int | None
    # "super-admin" | "org-admin" | "member"; an actor without one (the CLI) is not a member


def is_member(actor: Actor) -> bool:
    """A member changes nothing of the org's: only their own keys and password (see services/people.py)."""
    return not actor.is_superadmin and getattr(actor, "role", None) == "member"


def may_edit(actor: Actor, org_id: int | None) -> bool:
    """Global rows are the super-admins'; an org's rows are also its own admins' (never its members')."""
    return actor.is_superadmin or (org_id is not None and actor.org_id == org_id and not is_member(actor))


def require(actor: Actor, org_id: int | None, what: str) -> None:
    if not may_edit(actor, org_id):
        raise Forbidden(f"Only a super-admin can change global {what}." if org_id is None
                        else f"You can only change your own org's {what}.")


def require_org_admin(actor: Actor, org_id: int | None, what: str) -> None:
    """Org `org_id`'s admins and the super-admins; anyone else (another org, a member) is refused."""
    if not may_edit(actor, org_id):
        raise Forbidden(f"You can only {what} in your own org, as its admin.")


def require_superadmin(actor: Actor, what: str) -> None:
    if not actor.is_superadmin:
        raise Forbidden(f"Only a super-admin can change {what}.")


def row_or_gone(session: Session, model: type[Row], row_id: int, what: str) -> Row:
    """Row `row_id` of `model`; AdminError when it is gone (deleted meanwhile, in another tab say)."""
    row = session.get(model, row_id)
    if row is None:
        raise AdminError(f"That {what} no longer exists.")
    return row

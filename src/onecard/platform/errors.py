"""The closed vocabulary of domain errors.

Services raise these; the web layer maps each to an RFC 9457 problem document (``status`` and
``slug`` below), the bridge to a reason code. Messages are for operators: no secrets in them.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OneCardError(Exception):
    """Base of every expected failure. ``details`` is JSON-safe context for the problem body."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # Audit events that must be kept even though the request's transaction rolls back
        # (security refusals): (tenant_id, type, actor, data) tuples the caller records anew.
        self.lasting_audit: list[tuple[int, str, Any, dict[str, Any]]] = []


class ValidationFailed(OneCardError):
    """Input is well-formed but breaks a rule (a field, a range, a state)."""

    status = 422
    slug = "validation-failed"
    title = "Validation failed"


class NotFound(OneCardError):
    """The object does not exist for this tenant (also what another tenant's id looks like)."""

    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(OneCardError):
    """The request clashes with current state (duplicate number, wrong card state)."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class InvalidTransition(Conflict):
    """A card (or other state machine) cannot go from its current state by this action."""

    slug = "invalid-transition"
    title = "Invalid state transition"


class DuplicateRequest(Conflict):
    """An idempotency key was replayed with different content."""

    slug = "idempotency-key-reused"
    title = "Idempotency key reused with different content"


class InsufficientFunds(Conflict):
    """A posting would take an account below its minimum balance."""

    slug = "insufficient-funds"
    title = "Insufficient funds"


class Unbalanced(ValidationFailed):
    """The lines of an entry do not sum to zero."""

    slug = "unbalanced-entry"
    title = "Entry does not balance"


class ImmutableRecordError(OneCardError):
    """Someone tried to update or delete an append-only fact (entry, line, audit event)."""

    status = 500
    slug = "immutable-record"
    title = "Append-only record"


class AuthenticationFailed(OneCardError):
    """Credentials are wrong, missing, expired, or the operator is locked out."""

    status = 401
    slug = "authentication-failed"
    title = "Authentication failed"


class PermissionDenied(OneCardError):
    """The operator lacks the permission or data scope for this action."""

    status = 403
    slug = "permission-denied"
    title = "Permission denied"


class ApprovalRequired(OneCardError):
    """The action needs a second operator; an approval request was created instead."""

    status = 202
    slug = "approval-required"
    title = "Approval required"


class TenantScopeMissing(RuntimeError):
    """A tenant-owned table was queried with no tenant in scope: a programming error."""


class PluginError(RuntimeError):
    """A module manifest or its hooks are invalid; raised at start-up and fails the boot."""

"""Imports every platform table so that ``Base.metadata`` is complete (migrations, tests)."""

from onecard.platform.approvals.models import Approval
from onecard.platform.audit.models import AuditEvent
from onecard.platform.authz.models import ApiToken, Operator, OperatorRole, Role
from onecard.platform.cards.models import BlacklistChange, Card
from onecard.platform.db.base import Base
from onecard.platform.db.counters import Counter
from onecard.platform.ledger.models import Account, Balance, Entry, Line
from onecard.platform.people.models import Person
from onecard.platform.tenants.models import OrgUnit, Site, Tenant, TenantModule

__all__ = [
    "Account",
    "ApiToken",
    "Approval",
    "AuditEvent",
    "Balance",
    "Base",
    "BlacklistChange",
    "Card",
    "Counter",
    "Entry",
    "Line",
    "Operator",
    "OperatorRole",
    "OrgUnit",
    "Person",
    "Role",
    "Site",
    "Tenant",
    "TenantModule",
]

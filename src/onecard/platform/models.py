"""Imports every platform table so that ``Base.metadata`` is complete (migrations, tests)."""

from onecard.platform.approvals.models import Approval
from onecard.platform.audit.models import AuditEvent
from onecard.platform.authz.models import ApiToken, Operator, OperatorRole, Role
from onecard.platform.cards.keymodels import (
    CardLayoutPlanRow,
    CardLoad,
    ClearingBatch,
    ClearingRecordRow,
)
from onecard.platform.cards.models import BlacklistChange, Card
from onecard.platform.db.base import Base
from onecard.platform.db.counters import Counter
from onecard.platform.devices.models import (
    ConfigBundle,
    Device,
    DeviceCommand,
    DeviceEpoch,
    DeviceHeartbeat,
    DeviceListReceipt,
    DeviceListState,
    DeviceRecord,
    DeviceTap,
    DeviceTask,
    SigningKey,
)
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
    "CardLayoutPlanRow",
    "CardLoad",
    "ClearingBatch",
    "ClearingRecordRow",
    "ConfigBundle",
    "Counter",
    "Device",
    "DeviceCommand",
    "DeviceEpoch",
    "DeviceHeartbeat",
    "DeviceListReceipt",
    "DeviceListState",
    "DeviceRecord",
    "DeviceTap",
    "DeviceTask",
    "Entry",
    "Line",
    "Operator",
    "OperatorRole",
    "OrgUnit",
    "Person",
    "Role",
    "SigningKey",
    "Site",
    "Tenant",
    "TenantModule",
]

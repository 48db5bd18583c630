"""The canteen's alarms on the live monitor: every reconciliation case it opens (an offline
overspend, a bad MAC or TAC) reaches the tenant's consoles over ``/live`` as an ``alarm``.

Registered through ``onecard_socketio_namespaces`` (:mod:`onecard.modules.canteen.hooks`); the
web layer's poller (:mod:`onecard.web.live`) asks it only for tenants with the canteen on,
inside the tenant's scope. It reads and never writes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.modules.canteen.models import Pos, ReconCase
from onecard.modules.canteen.services import KEY
from onecard.web.alarms import Alarm, IdWatermark, mask


class ReconCaseAlarms:
    """The canteen's reconciliation cases as live alarms: one per case opened (a later sale
    joining an open case raises none)."""

    module: str | None = KEY

    def start(self, session: Session, now: datetime) -> IdWatermark:
        """Cases opened from now on are new."""
        return IdWatermark(session.scalar(select(func.max(ReconCase.id))) or 0)

    def poll(
        self, session: Session, cursor: IdWatermark, now: datetime
    ) -> tuple[list[Alarm], IdWatermark]:
        """Cases above the watermark, each reported once, with the POS of their latest sale."""
        cases = session.scalars(
            select(ReconCase)
            .where(ReconCase.id > cursor.low)
            .order_by(ReconCase.id)
            .limit(cursor.scan)
        ).all()
        alarms = [case_alarm(session, c) for c in cases if cursor.take(c.id)]
        cursor.forget_old()
        return alarms, cursor


def case_alarm(session: Session, case: ReconCase) -> Alarm:
    """The critical alarm of one case: its kind, the POS of the day's latest sale (when the
    case names one), the masked card and what the holder owes."""
    pos_ids = (case.detail or {}).get("devices") or []
    pos = session.get(Pos, pos_ids[-1]) if pos_ids else None
    owed = f"{case.receivable_fen / 100:.2f}"
    return Alarm(
        at=case.opened_at,
        device=pos.device_id if pos else "",
        code=f"{KEY}.{case.kind}",
        severity="critical",
        message=f"reconciliation case #{case.id}: {owed} owed",
        source=KEY,
        card=mask(case.card_no),
    )

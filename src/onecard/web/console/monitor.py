"""The live monitor page: taps and alarms as they happen, pushed over Socket.IO (``/live``).

The page only renders the frame; the events come from :mod:`onecard.web.live`, which admits the
same console login with ``devices.view`` and pushes only the operator's tenant's events.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from onecard.platform.devices.models import Device
from onecard.web.console.core import Ctx, bp, page, render

MAX_ROWS = 200  # the page keeps at most this many events (newest first)


@bp.get("/monitor", endpoint="monitor")
@page("devices.view")
def monitor(ctx: Ctx) -> Any:
    """The live monitor."""
    devices = list(
        ctx.session.scalars(select(Device.device_id).order_by(Device.device_id).limit(500))
    )
    return render("console/monitor.html", devices=devices, max_rows=MAX_ROWS)

"""Operations pages: the terminal list (health at a glance), one terminal, remote commands and
which terminals do not yet protect against a card.

The list pages in SQL (filters on kind, module, site, online state and "needs attention"); the
health of each row on the page comes from :func:`onecard.platform.devices.health.assess`, so the
early warnings (storage filling, unsent records growing, lists behind) are the same as the API's.
The "needs attention" filter is the SQL form of the alerts that depend on stored state only
(offline, clock beyond tolerance, unsent over the threshold, storage over the fill mark, config or
blacklist behind); trend-only warnings show on the rows but do not select them.
"""

from __future__ import annotations

from typing import Any

from flask import flash, request
from flask_babel import gettext as _
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import aliased

from onecard.platform.cards import blacklist
from onecard.platform.cards.models import Card
from onecard.platform.devices import commands, health, ingest, lists, services
from onecard.platform.devices.models import (
    Device,
    DeviceCommand,
    DeviceListReceipt,
    DeviceListState,
    DeviceRecord,
    DeviceTap,
)
from onecard.platform.devices.wire import BLACKLIST
from onecard.platform.errors import OneCardError
from onecard.platform.tenants.models import Site
from onecard.web.console.core import Ctx, bp, page, render, to
from onecard.web.console.forms import Pager, confirm_page, confirmed, paging
from onecard.web.console.messages import N_, localise

VIEW, MANAGE = "devices.view", "devices.manage"
FILTERS = ("kind", "module", "site_id", "state", "attention", "q")
# The operator's commands on the device page (the protocol has more; these are the everyday ones).
COMMANDS = {
    "open_door": N_("Open the door"),
    "sync_time": N_("Synchronise the clock"),
    "resend_records": N_("Resend records"),
}
POLICY = health.HealthPolicy()
# Each row's health is a few queries (health.assess reads heartbeats, list state and record
# gaps per device): pages are kept short so the list answers within the console's 200 ms at
# p95 (docs/benchmarks.md, "Console").
PAGE_ROWS, MOST_ROWS = 20, 50


def mask(card_no: str | None) -> str:
    """A card number shown by its last four characters only."""
    if not card_no:
        return ""
    return "•••• " + card_no[-4:]


def _filters() -> dict[str, str]:
    return {f: request.args.get(f, "").strip()[:64] for f in FILTERS}


def _filtered(ctx: Ctx, values: dict[str, str], current: int) -> Select[Any]:
    stmt: Select[Any] = select(Device.id)
    if ctx.site is not None:
        stmt = stmt.where(Device.site_id == ctx.site.id)
    if values["kind"]:
        stmt = stmt.where(Device.kind == values["kind"])
    if values["module"]:
        stmt = stmt.where(Device.module == values["module"])
    if values["site_id"].isdigit():
        stmt = stmt.where(Device.site_id == int(values["site_id"]))
    if values["state"] in ("online", "offline"):
        stmt = stmt.where(Device.online.is_(values["state"] == "online"))
    if values["q"]:
        like = f"%{values['q'].replace('%', '').replace('_', '')}%"
        stmt = stmt.where(or_(Device.device_id.like(like), Device.name.like(like)))
    if values["attention"] == "1":
        st = aliased(DeviceListState)
        stmt = stmt.outerjoin(st, and_(st.device_pk == Device.id, st.list_name == BLACKLIST))
        stmt = stmt.where(
            or_(
                Device.online.is_(False),
                func.abs(func.coalesce(Device.clock_offset_ms, 0)) > POLICY.clock_tolerance_ms,
                func.coalesce(Device.unsent, 0) >= POLICY.unsent_warn,
                and_(
                    Device.storage_total.is_not(None),
                    Device.storage_used >= Device.storage_total * POLICY.storage_fill_warn,
                ),
                Device.config_published > Device.config_version,
                func.coalesce(st.applied_version, 0) < current,
            )
        )
    return stmt


def _choices(ctx: Ctx) -> dict[str, list[Any]]:
    kinds = list(ctx.session.scalars(select(Device.kind).distinct().order_by(Device.kind)))
    modules = list(
        ctx.session.scalars(
            select(Device.module)
            .where(Device.module.is_not(None))
            .distinct()
            .order_by(Device.module)
        )
    )
    sites = list(ctx.session.execute(select(Site.id, Site.name).order_by(Site.code).limit(200)))
    return {"kinds": kinds, "modules": modules, "sites": sites}


@bp.get("/devices", endpoint="devices")
@page(VIEW)
def devices_list(ctx: Ctx) -> Any:
    """Terminals with health, last seen, clock, unsent records, storage and versions."""
    limit, offset = paging(PAGE_ROWS, MOST_ROWS)
    values = _filters()
    current = blacklist.current_version(ctx.session)
    stmt = _filtered(ctx, values, current)
    total = ctx.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    ids = list(ctx.session.scalars(stmt.order_by(Device.device_id).limit(limit).offset(offset)))
    found = list(ctx.session.scalars(select(Device).where(Device.id.in_(ids)))) if ids else []
    devices = sorted(found, key=lambda d: d.device_id)
    applied = _applied_versions(ctx, ids)
    choices = _choices(ctx)
    site_names = {sid: name for sid, name in choices["sites"]}
    rows = [
        {
            "device": d,
            "health": health.assess(ctx.session, d, now=ctx.now),
            "list_version": applied.get(d.id, 0),
            "site": site_names.get(d.site_id or 0, ""),
        }
        for d in devices
    ]
    return render(
        "console/devices/list.html",
        rows=rows,
        current=current,
        pager=Pager(total, limit, offset),
        values=values,
        choices=choices,
    )


def _applied_versions(ctx: Ctx, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = ctx.session.execute(
        select(DeviceListState.device_pk, DeviceListState.applied_version).where(
            DeviceListState.device_pk.in_(ids), DeviceListState.list_name == BLACKLIST
        )
    )
    return {pk: version for pk, version in rows}


@bp.get("/devices/<dev>", endpoint="devices_detail")
@page(VIEW)
def device_detail(ctx: Ctx, dev: str) -> Any:
    """One terminal: health and gaps, list states, receipts, commands, recent taps or records."""
    device = services.get_device(ctx.session, dev)
    show = "records" if request.args.get("show") == "records" else "taps"
    limit, offset = paging()
    model = DeviceRecord if show == "records" else DeviceTap
    total = (
        ctx.session.scalar(
            select(func.count()).select_from(model).where(model.device_pk == device.id)
        )
        or 0
    )
    recent = list(
        ctx.session.scalars(
            select(model)
            .where(model.device_pk == device.id)
            .order_by(model.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    states = list(
        ctx.session.scalars(
            select(DeviceListState)
            .where(DeviceListState.device_pk == device.id)
            .order_by(DeviceListState.list_name)
        )
    )
    receipts = list(
        ctx.session.scalars(
            select(DeviceListReceipt)
            .where(DeviceListReceipt.device_pk == device.id)
            .order_by(DeviceListReceipt.id.desc())
            .limit(20)
        )
    )
    site = ctx.session.get(Site, device.site_id) if device.site_id else None
    return render(
        "console/devices/detail.html",
        device=device,
        site=site,
        health=health.assess(ctx.session, device, now=ctx.now),
        gaps=ingest.gaps(ctx.session, device.id),
        states=states,
        current=blacklist.current_version(ctx.session),
        receipts=receipts,
        history=commands.history(ctx.session, device.id, limit=20),
        show=show,
        recent=recent,
        pager=Pager(total, limit, offset),
        commands=COMMANDS,
        may_manage=MANAGE in ctx.actor.permissions or "*" in ctx.actor.permissions,
        mask=mask,
    )


@bp.post("/devices/<dev>/commands", endpoint="devices_command")
@page(MANAGE)
def device_command(ctx: Ctx, dev: str) -> Any:
    """Queue a remote command (asks for confirmation first); the bridge sends it."""
    device = services.get_device(ctx.session, dev)
    name = request.form.get("name", "")
    if name not in COMMANDS:
        flash(_("Unknown command."), "error")
        return to("console.devices_detail", dev=device.device_id)
    if not confirmed():
        return confirm_page(
            _("%(command)s on %(device)s", command=_(COMMANDS[name]), device=device.device_id),
            _("The terminal carries out the command as soon as it is online."),
        )
    try:
        cmd: DeviceCommand = commands.send(
            ctx.session, device, name, {}, actor=ctx.actor, now=ctx.now
        )
    except OneCardError as exc:
        flash(localise(exc.message), "error")
        return to("console.devices_detail", dev=device.device_id)
    flash(_("Command %(name)s queued (%(id)s).", name=name, id=cmd.cmd_id[:8]), "success")
    return to("console.devices_detail", dev=device.device_id)


@bp.get("/devices/protection", endpoint="devices_protection")
@page(VIEW)
def device_protection(ctx: Ctx) -> Any:
    """For a card: the terminals that applied its latest blacklist change, and those not yet."""
    card_no = request.args.get("card_no", "").strip()[:32]
    result = None
    error = ""
    if card_no:
        card = ctx.session.scalar(select(Card).where(Card.card_no == card_no))
        if card is None:
            error = _("No card %(no)s.", no=card_no)
        else:
            version, rows = lists.card_protection(ctx.session, card.id)
            result = {
                "version": version,
                "protected": [r for r in rows if r.protected],
                "pending": [r for r in rows if not r.protected],
            }
    return render("console/devices/protection.html", card_no=card_no, result=result, error=error)

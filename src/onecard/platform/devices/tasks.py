"""Communication task manager: scheduled per-device-group tasks and their runner.

A task names an action (``collect_records``, ``push_lists``, ``sync_clock``), a selector of
devices (kind, site, group) and times of day (``HH:MM`` UTC). :func:`run_due` runs the tasks
whose ``next_run_at`` has come by queueing commands (or marking lists for resending), and
schedules the next run. The scheduler thread (or any cron) calls it with ``now``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.db.tenancy import tenant_scope, unscoped
from onecard.platform.devices import commands
from onecard.platform.devices.models import Device, DeviceListState, DeviceTask
from onecard.platform.errors import Conflict, ValidationFailed

ACTIONS = {"collect_records": "resend_records", "sync_clock": "sync_time", "push_lists": ""}
TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
SELECTOR_KEYS = frozenset({"kind", "site_id", "group"})


@dataclass(frozen=True)
class NewTask:
    """A task as an operator defines it."""

    name: str
    action: str
    times: tuple[str, ...]
    selector: dict[str, Any]


def next_run(times: list[Any], after: datetime) -> datetime:
    """The first of the daily ``times`` strictly after ``after``."""
    slots = sorted(time.fromisoformat(t) for t in times)
    for day in (0, 1):
        base = after.date() + timedelta(days=day)
        for slot in slots:
            when = datetime.combine(base, slot, tzinfo=after.tzinfo)
            if when > after:
                return when
    raise ValidationFailed("a task needs at least one time")


def create_task(session: Session, spec: NewTask, *, actor: Actor, now: datetime) -> DeviceTask:
    """Define a scheduled task; audited."""
    actor.ensure("devices.manage")
    if spec.action not in ACTIONS:
        raise ValidationFailed(f"unknown action {spec.action}", field="action")
    if not spec.times or not all(TIME_RE.match(t) for t in spec.times):
        raise ValidationFailed("times must be HH:MM (UTC)", field="times")
    if set(spec.selector) - SELECTOR_KEYS:
        raise ValidationFailed("selector keys are kind, site_id, group", field="selector")
    if session.scalar(select(DeviceTask.id).where(DeviceTask.name == spec.name)):
        raise Conflict(f"task {spec.name} exists", field="name")
    task = DeviceTask(
        name=spec.name,
        action=spec.action,
        selector=dict(spec.selector),
        times=list(spec.times),
        enabled=True,
        next_run_at=next_run(list(spec.times), now),
        created_at=now,
    )
    session.add(task)
    session.flush()
    record(
        session,
        "device.task_created",
        actor=actor,
        now=now,
        object_type="device_task",
        object_id=task.id,
        data={"name": spec.name, "action": spec.action},
    )
    return task


def selected(session: Session, selector: dict[str, Any]) -> list[Device]:
    """Enabled devices matching a selector."""
    stmt = select(Device).where(Device.enabled).order_by(Device.device_id)
    for key in ("kind", "site_id", "group"):
        if key in selector:
            stmt = stmt.where(getattr(Device, key) == selector[key])
    return list(session.scalars(stmt))


def run_task(session: Session, task: DeviceTask, *, now: datetime) -> dict[str, Any]:
    """Run ``task`` once now for its devices; returns what it did."""
    actor = Actor.system(f"task:{task.name}", tenant_id=task.tenant_id)
    devices = selected(session, task.selector)
    cmd = ACTIONS[task.action]
    for d in devices:
        if cmd:
            commands.send(session, d, cmd, {}, actor=actor, now=now)
        else:  # push lists: forget what was sent so the distributor sends from what is applied
            for st in session.scalars(
                select(DeviceListState).where(DeviceListState.device_pk == d.id)
            ):
                st.sent_version = st.applied_version
    result = {"devices": len(devices), "at": now.isoformat()}
    task.last_run_at, task.last_result = now, result
    task.next_run_at = next_run(task.times, now)
    session.flush()
    return result


def run_due(session: Session, *, now: datetime) -> int:
    """Run every enabled task whose time has come, across tenants (caller commits)."""
    with unscoped(reason="task runner walks every tenant"):
        due = session.execute(
            select(DeviceTask.tenant_id, DeviceTask.id).where(
                DeviceTask.enabled, DeviceTask.next_run_at <= now
            )
        ).all()
    for tid, task_id in due:
        with tenant_scope(tid):
            task = session.get(DeviceTask, task_id)
            if task is not None:
                run_task(session, task, now=now)
    return len(due)


def list_tasks(session: Session) -> list[DeviceTask]:
    """Tasks of the tenant in scope."""
    return list(session.scalars(select(DeviceTask).order_by(DeviceTask.name)))

"""What the Flask app holds for the lifetime of the process (built once in ``create_app``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from onecard.config import Settings
from onecard.platform.authz.services import AuthPolicy
from onecard.platform.registry import Registry
from onecard.platform.secrets import SecretBox
from onecard.web.throttle import FailureThrottle

T = TypeVar("T")


@dataclass
class Snapshots:
    """Results of expensive reads, each kept for ``ttl`` (per process).

    For figures that sum a whole tenant (the liability report reads every holder account) and
    may be a minute old, as the page then says. Two requests that miss at once both compute;
    the later result is kept.
    """

    ttl: timedelta = timedelta(seconds=60)
    _kept: dict[Hashable, tuple[datetime, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: Hashable, now: datetime, compute: Callable[[], T]) -> tuple[T, datetime]:
        """The value of ``key`` computed less than ``ttl`` before ``now`` (else computed now),
        and when it was computed."""
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and now - kept[0] < self.ttl:
            return kept[1], kept[0]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._kept[key] = (now, value)
        return value, now


@dataclass
class AppState:
    """Process-wide services of the web app; request code reaches it via :func:`state`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: Registry
    box: SecretBox
    policy: AuthPolicy
    throttle: FailureThrottle = field(default_factory=FailureThrottle)
    snapshots: Snapshots = field(default_factory=Snapshots)


def state(app: Flask | None = None) -> AppState:
    """The :class:`AppState` of ``app`` (default: the current app)."""
    return (app or current_app).extensions["onecard"]  # type: ignore[no-any-return]

"""What the Flask app holds for the lifetime of the process (built once in ``create_app``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from onecard.config import Settings
from onecard.platform.authz.services import AuthPolicy
from onecard.platform.registry import Registry
from onecard.platform.secrets import SecretBox
from onecard.web.throttle import FailureThrottle


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


def state(app: Flask | None = None) -> AppState:
    """The :class:`AppState` of ``app`` (default: the current app)."""
    return (app or current_app).extensions["onecard"]  # type: ignore[no-any-return]

"""Flask application: REST API (``/api/v1``), operations endpoints and the console."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from sqlalchemy import Engine

from onecard.config import Settings, load_settings
from onecard.platform.authz.services import AuthPolicy
from onecard.platform.db.engine import make_engine, make_session_factory
from onecard.platform.registry import Registry
from onecard.platform.secrets import SecretBox, load_or_create_secret_key

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    registry: Registry | None = None,
) -> Flask:
    """Build the web app. Tests pass ``settings`` (and may share an ``engine``)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 60 * 1024 * 1024
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    engine = engine or make_engine(
        settings.database.url, echo=settings.database.echo, pool_size=settings.database.pool_size
    )
    from onecard.web.state import AppState

    app.extensions["onecard"] = AppState(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        registry=registry or Registry.load(),
        box=SecretBox(_secret_key(settings)),
        policy=policy_from(settings),
    )
    _register(app)
    return app


def policy_from(settings: Settings) -> AuthPolicy:
    """The login policy configured in ``settings``."""
    sec = settings.security
    return AuthPolicy(
        max_failures=sec.login_max_failures,
        lockout_minutes=sec.lockout_minutes,
        token_ttl_minutes=settings.web.token_ttl_minutes,
        password_min_length=sec.password_min_length,
    )


def _secret_key(settings: Settings) -> str:
    if settings.security.secret_key:
        return settings.security.secret_key
    url = settings.database.url
    base = Path(url.split("///", 1)[1]).parent if url.startswith("sqlite:///") else Path("var")
    return load_or_create_secret_key(base / "secret.key")


def _register(app: Flask) -> None:
    from onecard.web.api import (
        accounts,
        audit,
        auth,
        cardkeys,
        cards,
        devices,
        ledger,
        openapi,
        operators,
        people,
    )
    from onecard.web.api import tenants as tenants_api
    from onecard.web.api.base import api_v1
    from onecard.web.console import init_console
    from onecard.web.live import init_live
    from onecard.web.ops import install_metrics, ops
    from onecard.web.problems import register_error_handlers

    del accounts, audit, auth, cardkeys, cards, ledger, openapi, operators, people  # routes
    del devices, tenants_api
    app.register_blueprint(api_v1)
    app.register_blueprint(ops)
    init_console(app)
    _mount_module_blueprints(app)
    init_live(app)
    register_error_handlers(app)
    install_metrics(app)

    @app.before_request
    def _request_id() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = (
            incoming if 8 <= len(incoming) <= 64 and incoming.isalnum() else (uuid.uuid4().hex)
        )

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response


def _mount_module_blueprints(app: Flask) -> None:
    """Register every blueprint the installed modules contribute (``onecard_blueprints``).

    A blueprint keeps its own ``url_prefix``; one without is mounted at ``/m/<module key>``.
    Whether a tenant has the module switched on is checked by the module's views.
    """
    registry: Registry = app.extensions["onecard"].registry
    for key, batch in _blueprints_by_module(registry):
        for blueprint in batch:
            if not isinstance(blueprint, Blueprint):
                raise TypeError(f"module {key} returned {blueprint!r} as a blueprint")
            prefix = None if blueprint.url_prefix else f"/m/{key}"
            app.register_blueprint(blueprint, url_prefix=prefix)


def _blueprints_by_module(registry: Registry) -> list[tuple[str, list[Any]]]:
    out: list[tuple[str, list[Any]]] = []
    for impl in registry.pm.hook.onecard_blueprints.get_hookimpls():
        batch: Any = impl.function()
        out.append((impl.plugin_name, list(batch or ())))
    return out

"""Operations endpoints: ``/healthz`` (up), ``/readyz`` (database reachable), ``/metrics``."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, json, redirect, request, url_for
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from sqlalchemy import text

from onecard.web.state import state

ops = Blueprint("ops", __name__)
access = logging.getLogger("onecard.access")


class Metrics:
    """The web process's Prometheus metrics (a registry per app, so tests stay independent)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "onecard_http_requests_total",
            "HTTP requests",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "onecard_http_request_seconds",
            "HTTP request latency",
            ["method", "endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5),
        )


@ops.get("/")
def index() -> Response:
    """Browsers land in the console; API clients get a map of the service (JSON)."""
    from onecard import __version__

    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    if best == "text/html" and "console.home" in current_app.view_functions:
        return redirect(url_for("console.home"))
    body = {
        "service": "OneCard (一卡通)",
        "version": __version__,
        "console": "/console",
        "api": "/api/v1",
        "openapi": "/api/v1/openapi.json",
        "login": "POST /api/v1/auth/login",
        "health": ["/healthz", "/readyz", "/metrics"],
    }
    return Response(json.dumps(body, ensure_ascii=False), mimetype="application/json")


@ops.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@ops.get("/readyz")
def readyz() -> Response:
    """Ready when the database answers."""
    try:
        with state().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means not ready
        return Response(
            f'{{"status":"unavailable","database":"{type(exc).__name__}"}}',
            503,
            mimetype="application/json",
        )
    return Response('{"status":"ready","database":"ok"}', 200, mimetype="application/json")


@ops.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(_metrics().registry), mimetype=CONTENT_TYPE_LATEST)


def _metrics() -> Metrics:
    from flask import current_app

    return current_app.extensions["onecard_metrics"]  # type: ignore[no-any-return]


def install_metrics(app: Flask) -> None:
    """Count and time every request by endpoint and status."""
    app.extensions["onecard_metrics"] = Metrics()

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        m = _metrics()
        endpoint = request.endpoint or "unknown"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        m.requests.labels(request.method, endpoint, str(response.status_code)).inc()
        m.latency.labels(request.method, endpoint).observe(seconds)
        access.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "ms": round(seconds * 1000, 2),
                "request_id": g.get("request_id"),
                "ip": request.remote_addr,
                "operator": getattr(g.get("actor"), "id", None),
            },
        )
        return response

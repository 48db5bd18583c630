"""Several web processes: live events cross processes through the Socket.IO message queue on
the machine's Redis (``[web] message_queue``), and the production recipe (gunicorn, one gthread
worker per process) serves the console and Socket.IO.

Every server here is real (werkzeug's threaded server in a thread, or gunicorn in a process)
on a free loopback port; the consoles are python-socketio clients logged in over HTTP. Each
test uses a secret key of its own, which names the queue's channel, so concurrent runs on the
same Redis never hear each other.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from flask import Flask
from flask_socketio import SocketIO
from sqlalchemy import Engine
from tests.web.console.conftest import PASSWORD, ConsoleUser
from werkzeug.serving import make_server

from onecard.config import Settings
from onecard.web import create_app
from onecard.web.live import NAMESPACE, Poller, channel_of, room, socketio_of

REDIS = os.environ.get("ONECARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 20.0  # seconds a test waits for an event before it gives up (never a timing assertion)


@pytest.fixture(scope="module")
def redis_up() -> str:
    """The machine's Redis; missing, the tests fail loudly (they are never skipped)."""
    import redis

    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS} is not answering ({exc}); start redis-server")
    return REDIS


@pytest.fixture
def queued_settings(app: Flask, redis_up: str) -> Settings:
    """The test app's settings with the Redis message queue and a secret of this test's own."""
    settings: Settings = app.extensions["onecard"].settings
    return replace(
        settings,
        web=replace(settings.web, message_queue=redis_up),
        security=replace(settings.security, secret_key=secrets.token_hex(16)),
    )


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], str]]:
    """Factory: ``serve(app)`` runs ``app`` on a free port in a thread; returns its base URL."""
    running: list[tuple[Any, threading.Thread, Flask]] = []

    def _serve(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread, app))
        return f"http://127.0.0.1:{server.server_port}"

    yield _serve
    for server, thread, app in running:
        poller: Poller = app.extensions["onecard.live"]
        poller.stopped.set()
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def logged_in(base: str, user: ConsoleUser) -> requests.Session:
    """An HTTP session with ``user``'s console login on the server at ``base``."""
    http = requests.Session()
    page = http.get(f"{base}/console/login", timeout=WAIT)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    form = {
        "tenant": user.tenant.slug,
        "username": user.username,
        "password": PASSWORD,
        "csrf_token": found.group(1),
    }
    resp = http.post(f"{base}/console/login", data=form, allow_redirects=False, timeout=WAIT)
    assert resp.status_code == 303, resp.text
    return http


class Console:
    """A python-socketio client on ``/live`` that keeps the alarms it receives."""

    def __init__(self, base: str, http: requests.Session) -> None:
        self.alarms: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        self.client = socketio.Client(http_session=http, reconnection=False)
        self.client.on("alarm", self._alarm, namespace=NAMESPACE)
        self.client.connect(base, namespaces=[NAMESPACE], wait_timeout=WAIT)

    def _alarm(self, data: dict[str, Any]) -> None:
        self.alarms.append(data)
        self.arrived.set()

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()


@pytest.fixture
def consoles() -> Iterator[Callable[[str, requests.Session], Console]]:
    """Factory of :class:`Console` clients, disconnected after the test."""
    made: list[Console] = []

    def _make(base: str, http: requests.Session) -> Console:
        made.append(Console(base, http))
        return made[-1]

    yield _make
    for console in made:
        console.close()


def an_alarm(code: str) -> dict[str, Any]:
    """An ``alarm`` event body."""
    return {
        "at": "2026-09-01T08:30:00+00:00",
        "device": "gate-7",
        "code": code,
        "severity": "warning",
        "message": code,
        "source": "device",
        "card": "",
    }


def test_an_event_emitted_by_one_process_reaches_a_console_on_another(
    queued_settings: Settings,
    engine: Engine,
    serve: Callable[[Flask], str],
    consoles: Callable[[str, requests.Session], Console],
    make_console_user: Callable[..., ConsoleUser],
) -> None:
    first, second = (create_app(queued_settings, engine=engine) for _ in range(2))
    base_first, base_second = serve(first), serve(second)
    admin = make_console_user(login=False)
    # A login made on one process is valid on the other: they share the secret key.
    console = consoles(base_second, logged_in(base_first, admin))

    socketio_of(first).emit(
        "alarm", an_alarm("crossed"), to=room(admin.tenant.id), namespace=NAMESPACE
    )

    assert console.arrived.wait(WAIT), "the event did not cross the message queue"
    assert [a["code"] for a in console.alarms] == ["crossed"]


def test_what_a_process_polls_reaches_only_its_own_consoles(
    queued_settings: Settings,
    engine: Engine,
    serve: Callable[[Flask], str],
    consoles: Callable[[str, requests.Session], Console],
    make_console_user: Callable[..., ConsoleUser],
) -> None:
    first, second = (create_app(queued_settings, engine=engine) for _ in range(2))
    base_first, base_second = serve(first), serve(second)
    admin = make_console_user(login=False)
    on_first = consoles(base_first, logged_in(base_first, admin))
    on_second = consoles(base_second, logged_in(base_second, admin))
    poller: Poller = first.extensions["onecard.live"]

    # What the first process's poller found goes to its own room of the tenant, through the
    # queue; then an event to the tenant's room, which every process delivers.
    socketio_of(first).emit(
        "alarm", an_alarm("polled"), to=poller.local_room(admin.tenant.id), namespace=NAMESPACE
    )
    socketio_of(first).emit(
        "alarm", an_alarm("tenant-wide"), to=room(admin.tenant.id), namespace=NAMESPACE
    )

    assert on_second.arrived.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while len(on_first.alarms) < 2 and time.monotonic() < deadline:
        on_first.arrived.wait(0.1)
    assert [a["code"] for a in on_first.alarms] == ["polled", "tenant-wide"]
    assert [a["code"] for a in on_second.alarms] == ["tenant-wide"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gunicorn(queued_settings: Settings, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Factory: ``gunicorn()`` starts ``gunicorn -w 1 --threads 8`` on the test database with
    the Redis queue (the production recipe of docs/operations.md); returns its base URL."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "{queued_settings.database.url}"\n'
        f'[web]\nmessage_queue = "{queued_settings.web.message_queue}"\n'
        f'[security]\nsecret_key = "{queued_settings.security.secret_key}"\n'
        "[logging]\njson = false\n",
        encoding="utf-8",
    )
    started: list[subprocess.Popen[bytes]] = []

    def _start() -> str:
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "1",
            "--threads",
            "8",
            "-b",
            f"127.0.0.1:{port}",
            "onecard.web.wsgi:app",
        ]
        env = {**os.environ, "ONECARD_CONFIG": str(config)}
        started.append(subprocess.Popen(command, env=env, cwd=tmp_path))
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base, started[-1])
        return base

    yield _start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_up(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}")
        try:
            requests.get(f"{base}/console/login", timeout=10)
            return
        # The socket accepts before the worker has loaded the app: a first request can wait
        # (or time out) while it boots, on a busy machine for more than a few seconds.
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    pytest.fail("gunicorn did not answer within 60 s")


def test_gunicorn_recipe_serves_the_console_and_live_events_across_processes(
    gunicorn: Callable[[], str],
    queued_settings: Settings,
    consoles: Callable[[str, requests.Session], Console],
    make_console_user: Callable[..., ConsoleUser],
) -> None:
    base_first, base_second = gunicorn(), gunicorn()
    page = requests.get(f"{base_first}/console/login", timeout=WAIT)
    assert page.status_code == 200
    assert 'name="csrf_token"' in page.text
    handshake = requests.get(f"{base_second}/socket.io/?EIO=4&transport=polling", timeout=WAIT)
    assert handshake.status_code == 200
    assert '"sid"' in handshake.text
    admin = make_console_user(login=False)
    console = consoles(base_second, logged_in(base_first, admin))

    # An emitter outside the web processes (as a bridge would be) on the same queue.
    emitter = SocketIO(
        message_queue=queued_settings.web.message_queue, channel=channel_of(queued_settings)
    )
    emitter.emit("alarm", an_alarm("from-outside"), to=room(admin.tenant.id), namespace=NAMESPACE)

    assert console.arrived.wait(WAIT), "the event did not reach the gunicorn process"
    assert [a["code"] for a in console.alarms] == ["from-outside"]

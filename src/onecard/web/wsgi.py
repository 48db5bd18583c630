"""The WSGI entry of production HTTP servers: ``gunicorn -w 1 --threads 100 onecard.web.wsgi:app``.

Settings come from ``$ONECARD_CONFIG`` (else ``./config.toml``) and ``ONECARD_*`` variables, as
for every OneCard process; logs are configured as ``onecard serve`` configures them. One
worker per process with threads (gunicorn's gthread worker) is what Flask-SocketIO's threading
mode needs: a Socket.IO session lives in one process, so more capacity means more processes
behind a proxy with sticky sessions and ``[web] message_queue`` (docs/operations.md).
"""

from __future__ import annotations

from onecard.config import load_settings
from onecard.web import create_app
from onecard.web.logs import configure_logging

settings = load_settings()
configure_logging(settings.logging.level, settings.logging.json)
app = create_app(settings)

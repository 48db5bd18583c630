"""The web console: server-rendered pages for card-centre, finance and facility staff.

``init_console(app)`` wires the ``console`` blueprint (``/console``), its session-cookie login,
CSRF protection, security headers, Flask-Babel (Chinese and English) and the template helpers.
Pages call platform services directly; the REST API is for scripts and other systems.

Each area is one module (``people``, ``cards``, ``accounts`` ...) that adds routes to the one
``console`` blueprint, because the menu registry names endpoints as ``console.<key>``. A later
area (devices, the live monitor) adds its own module here, or its own blueprint, and a menu item
through the registry: the menu shows an item only once its endpoint exists, so nothing needs a
placeholder page.
"""

from __future__ import annotations

from flask import Flask

from onecard.web.console.core import bp


def init_console(app: Flask) -> None:
    """Register the console on ``app`` (called once from ``create_app``)."""
    from onecard.web.console import (  # noqa: F401 - the modules add their routes to ``bp``
        accounts,
        admin,
        approvals,
        audit,
        auth,
        cards,
        devices,
        journal,
        monitor,
        people,
        people_import,
        reports,
        settings,
    )
    from onecard.web.console.i18n import init_i18n
    from onecard.web.console.security import init_security

    init_security(app)
    init_i18n(app)
    app.register_blueprint(bp)

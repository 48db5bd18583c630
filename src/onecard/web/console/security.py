"""Session-cookie secret, CSRF tokens on every console POST, and security headers.

The Flask session key is derived (HKDF) from the platform secret under its own purpose label, so
the cookie signing key is never the key that seals database secrets. Every state-changing
console request must carry the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``); the token is compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Flask, Response, abort, request, session

from onecard.web.state import state

CSRF_KEY = "csrf"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def session_key(platform_secret: str) -> bytes:
    """The key that signs console session cookies (derived, purpose-bound)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"onecard.console-session")
    return hkdf.derive(platform_secret.encode())


def csrf_token() -> str:
    """The session's CSRF token (created on first use)."""
    token = session.get(CSRF_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_KEY] = token
    return str(token)


def check_csrf() -> None:
    """Refuse (400) a state-changing request without the session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = session.get(CSRF_KEY)
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    if not expected or not hmac.compare_digest(str(expected), sent):
        abort(400, description="CSRF token missing or wrong; reload the page and try again")


def add_headers(response: Response) -> Response:
    """Security headers for console pages."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_security(app: Flask) -> None:
    """Cookie settings and the session signing key."""
    from onecard.web import _secret_key

    settings = state(app).settings
    app.secret_key = session_key(_secret_key(settings))
    app.config.update(
        SESSION_COOKIE_NAME="onecard_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Behind a TLS-terminating proxy (web.trust_proxy) the cookie is HTTPS-only.
        SESSION_COOKIE_SECURE=settings.web.trust_proxy,
    )

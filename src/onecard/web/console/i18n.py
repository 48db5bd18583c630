"""Chinese and English through Flask-Babel; money and time formatting for templates.

The locale is the operator's choice for this session, else the browser's ``Accept-Language``
(``zh*`` → Chinese, ``en*`` → English), else Chinese. Catalogues live in
``web/translations/<lang>/LC_MESSAGES/messages.po``; ``make install`` compiles the ``.mo``.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Flask, request, session
from flask_babel import Babel, get_locale
from flask_babel import lazy_gettext as _l

from onecard.platform.money import Money
from onecard.web.console.messages import localise

LANGUAGES = {"zh": "中文", "en": "English"}
DEFAULT_LANGUAGE = "zh"
DISPLAY_ZONE = ZoneInfo("Asia/Shanghai")

# Labels the menu registry and platform vocabularies hand us as English text; listed here so
# that message extraction sees them.
VOCABULARY = (
    _l("People"),
    _l("Cards"),
    _l("Accounts"),
    _l("Approvals"),
    _l("Journal"),
    _l("Audit"),
    _l("Operators"),
    _l("Settings"),
    _l("Reports"),
    _l("active"),
    _l("lost"),
    _l("frozen"),
    _l("replaced"),
    _l("returned"),
    _l("expired"),
    _l("pending"),
    _l("approved"),
    _l("rejected"),
    _l("staff"),
    _l("student"),
    _l("visitor"),
    _l("elderly"),
    _l("contractor"),
    _l("resident"),
    _l("other"),
    _l("cash"),
    _l("bank"),
    _l("refund"),
    _l("adjustment"),
    _l("card.unfreeze"),
    _l("card.return"),
    _l("person.delete"),
    _l("reversal"),
    _l("holder.purse"),
    _l("holder.subsidy"),
    _l("holder.deposit"),
    _l("card_float"),
    _l("reading"),
    _l("validating"),
    _l("inserting"),
    _l("done"),
    _l("failed"),
    _l("ok"),  # a device's health
    _l("warning"),
    _l("critical"),
)


def select_locale() -> str:
    """The session's language, else the browser's best match, else Chinese."""
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return str(chosen)
    return request.accept_languages.best_match(list(LANGUAGES)) or DEFAULT_LANGUAGE


def yuan(fen: int | None) -> str:
    """``12345`` → ``"123.45"`` (empty for ``None``)."""
    return "" if fen is None else Money(int(fen)).format()


def local_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An aware UTC time shown in the display zone (naive values are taken as UTC)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value.astimezone(DISPLAY_ZONE).strftime(fmt)


def init_i18n(app: Flask) -> None:
    """Babel with the console's catalogues, and the template filters."""
    Babel(app, locale_selector=select_locale, default_translation_directories="translations")
    app.jinja_env.filters["yuan"] = yuan
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.filters["localise"] = localise
    app.jinja_env.globals["current_locale"] = lambda: str(get_locale())
    app.jinja_env.globals["LANGUAGES"] = LANGUAGES

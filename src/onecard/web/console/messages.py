"""The console's catalogue of what platform services say: their English messages in the
operator's language.

Services raise :class:`~onecard.platform.errors.OneCardError` with an English message built
from a template (``f"person number {no} already exists"``), and pydantic reports validation
problems in English; the platform knows nothing of Flask or locales, and must not. This module
is the web side of that contract: :data:`TEMPLATES` lists every such template as a message id of
the console's catalogue, with ``%(name)s`` where the service puts a value. :func:`localise`
finds the template a message was built from, and returns its translation with the values put
back. A message no template matches is shown as it is (English beats an empty box).

Values are kept as the service wrote them, except two kinds: a word of the platform's
vocabulary (a card status, a card action) is translated, and an ``%(error)s`` value, which is
itself a message (``record 3: <problem>``), is localised in turn.

``tests/web/console/test_messages.py`` reads every ``raise`` of a OneCardError in
``onecard.platform`` and fails when a literal message has no template here, or no Chinese text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from flask_babel import gettext


def N_(message: str) -> str:  # the name pybabel extracts by default
    """Mark ``message`` for extraction; it is translated later, when a page is rendered."""
    return message


TEMPLATES: tuple[str, ...] = (
    # people, org units, sites, tenants
    N_("person number %(person_no)s already exists"),
    N_("person number already exists"),
    N_("person %(id)s not found"),
    N_("org unit is outside your data scope"),
    N_("outside your data scope"),
    N_("org unit %(code)s already exists"),
    N_("org unit %(code)s not found"),
    N_("unknown org unit %(code)s"),
    N_("site %(code)s already exists"),
    N_("site %(id)s not found"),
    N_("tenant %(slug)s already exists"),
    N_("tenant %(slug)s not found"),
    N_("tenant has no %(kind)s account"),
    N_("slug must be 2-40 of a-z, 0-9 and '-', starting with a letter"),
    N_("%(name)s is not an IANA time zone"),
    N_("unknown setting %(key)s"),
    N_("valid_until is before valid_from"),
    N_("identity_class must be one of %(choices)s"),
    N_("may be left out, but not set to null"),
    # imports
    N_("CSV file is not UTF-8 text"),
    N_("XLSX file has no worksheet"),
    N_("not a readable XLSX file: %(error)s"),
    N_("header lacks column %(column)s"),
    N_("unknown column %(column)s"),
    N_("a file may hold at most %(max)s rows"),
    # operators, roles, permissions
    N_("operator %(username)s already exists"),
    N_("operator %(id)s not found"),
    N_("username must be 2-64 of a-z, 0-9, '.', '_', '-'"),
    N_("password must be at least %(min)s characters"),
    N_("password is too long"),
    N_("role %(name)s already exists"),
    N_("role %(name)s not found"),
    N_("unknown permission %(name)s"),
    N_("unknown scope key %(key)s"),
    N_("missing permission %(permission)s"),
    N_("only platform administrators create platform administrators"),
    N_("only platform administrators create tenants"),
    N_("invalid or expired token"),
    # cards
    N_("card number %(card_no)s already exists"),
    N_("card %(id)s not found"),
    N_("card is %(status)s"),
    N_("cannot %(action)s a %(status)s card"),
    N_("card_no must be 4-32 letters or digits"),
    N_("uid must be 8-32 upper-case hex digits"),
    N_("unknown card kind %(kind)s"),
    N_("deposit_fen must be between 0 and 1000000"),
    N_("only CPU cards carry a purse application"),
    N_("the card layout plan has no one-level purse application"),
    N_("the card's ASN does not match this card"),
    N_("tenant or card id too large for an ASN"),
    N_("this online counter was already loaded with another request"),
    N_("rnd and mac1 are 4 bytes, terminal 6 bytes"),
    N_("source must be one of %(choices)s"),
    N_("key operation for another tenant"),
    N_("the plan names another tenant"),
    # money and the ledger
    N_("purse and subsidy do not cover the amount"),
    N_("account %(code)s would fall below its minimum"),
    N_("account %(id)s not found"),
    N_("account %(id)s is closed"),
    N_("balance row missing for an account"),
    N_("%(text)s is not an amount"),
    N_("%(text)s has more than two decimal places"),
    N_("%(field)s must be a whole number of fen"),
    N_("%(field)s must be between 1 and %(max)s"),
    N_("amount_fen must be positive"),
    N_("adjustment amount must be a non-zero whole number of fen"),
    N_("an adjustment needs a reason"),
    N_("a bank top-up needs the bank reference"),
    N_("channel must be one of %(choices)s"),
    N_("cannot transfer an account to itself"),
    N_("transfers are between holder purses"),
    N_("a subsidy batch needs an id"),
    N_("an entry needs at least two lines"),
    N_("an entry may not mix currencies"),
    N_("lines do not sum to zero"),
    N_("line amounts are whole fen"),
    N_("line amount out of range"),
    N_("entry %(id)s not found"),
    N_("entry already reversed"),
    N_("a reversal cannot itself be reversed; post a new entry"),
    N_("idempotency key was already used for a different request"),
    N_("idempotency key was already used for a different entry"),
    N_("idempotency key was already used for a different charge"),
    N_("the merchant account may not be a purse or the card float"),
    N_("a batch holds 1 to %(max)s records"),
    N_("record %(index)s: %(error)s"),
    N_("rate_bp must be between 1 and 10000"),
    N_("%(what)s rows are append-only"),
    # approvals
    N_("approval %(id)s not found"),
    N_("approval is already %(status)s"),
    N_("the requester cannot decide their own request"),
    N_("note is too long"),
    # devices
    N_("device %(id)s not found"),
    N_("device id %(id)s is taken"),
    N_("device id must be 3-64 of a-z, 0-9 and '-'"),
    N_("kind must be a short lower-case name"),
    N_("field %(field)s cannot be changed"),
    N_("device %(id)s needs setting %(setting)s"),
    N_("unknown command %(name)s"),
    N_("command %(id)s not found for this device"),
    N_("unknown action %(action)s"),
    N_("times must be HH:MM (UTC)"),
    N_("selector keys are kind, site_id, group"),
    N_("a task needs at least one time"),
    N_("task %(name)s exists"),
    N_("a record of another device"),
    # the canteen module's services
    N_("merchant %(code)s already exists"),
    N_("a canteen POS must be a 'pos' device of module 'canteen'"),
    N_("the POS and its merchant must be at the same site"),
    N_("a fixed-amount POS needs a price per meal period"),
    N_("price_fen out of range"),
    N_("a refund needs a reason"),
    N_("this POS has no sale to refund"),
    N_("the last sale was already refunded"),
    N_("the sale's day is already settled"),
    N_("the case is already settled"),
    N_("%(what)s %(id)s not found"),
    # pydantic's own texts for the constraints the platform's input models use
    N_("Field required"),
    N_("Extra inputs are not permitted"),
    N_("String should have at least %(min)s character"),
    N_("String should have at least %(min)s characters"),
    N_("String should have at most %(max)s character"),
    N_("String should have at most %(max)s characters"),
    N_("String should match pattern %(pattern)s"),
    N_("Input should be a valid string"),
    N_("Input should be a valid integer"),
    N_("Input should be a valid integer, unable to parse string as an integer"),
    N_("Input should be a valid date"),
    N_("Input should be a valid date in the format YYYY-MM-DD, %(detail)s"),
    N_("Input should be a valid date or datetime, %(detail)s"),
    # canteen (its console pages show these)
    N_("the case is already settled"),
    N_("the statement has nothing to pay out"),
    N_("no payout of this statement awaits approval"),
    N_("the requester cannot decide their own payout"),
)

# Words of the platform's vocabulary that appear as values inside messages: card statuses
# (already in the console's catalogue) and the card actions of ``cards.lifecycle``.
TERMS: frozenset[str] = frozenset(
    {
        "active",
        "lost",
        "frozen",
        "replaced",
        "returned",
        "expired",
        "pending",
        "approved",
        "rejected",
        N_("report loss"),
        N_("freeze"),
        N_("unfreeze"),
        N_("replace"),
        N_("return"),
        N_("expire"),
    }
)

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# pydantic prefixes the text of a validator's ValueError with this; the text itself is ours.
_VALUE_ERROR = "Value error, "


@functools.cache
def _patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    """Each template with placeholders as a regular expression, the most specific first: the
    longest literal start, then the most literal text (so ``person %(id)s not found`` and
    ``record %(index)s: %(error)s`` win over ``%(what)s %(id)s not found``)."""
    templated = [t for t in TEMPLATES if _PLACEHOLDER.search(t)]
    templated.sort(key=_specificity, reverse=True)
    return tuple((_compile(t), t) for t in templated)


def _specificity(template: str) -> tuple[int, int]:
    return template.find("%("), len(_PLACEHOLDER.sub("", template))


def _compile(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        parts.append(f"(?P<{match.group(1)}>.+?)")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts), re.DOTALL)


def match(message: str) -> tuple[str, dict[str, str]] | None:
    """The template ``message`` was built from and the values in it, or ``None``."""
    if message in _literals():
        return message, {}
    for pattern, template in _patterns():
        found = pattern.fullmatch(message)
        if found:
            return template, found.groupdict()
    return None


@functools.cache
def _literals() -> frozenset[str]:
    return frozenset(t for t in TEMPLATES if not _PLACEHOLDER.search(t))


def localise(message: str) -> str:
    """``message`` (a service's or pydantic's English text) in the current console language."""
    message = message.removeprefix(_VALUE_ERROR)
    found = match(message)
    if found is None:
        return message
    template, values = found
    return str(gettext(template, **{name: _value(name, v) for name, v in values.items()}))


def _value(name: str, value: str) -> str:
    if value in TERMS:
        return str(gettext(value))
    if name == "error":
        return localise(value)
    return value


def unmatched(messages: Iterable[str]) -> list[str]:
    """The messages of ``messages`` that no template matches (what the catalogue lacks)."""
    return [m for m in messages if match(m.removeprefix(_VALUE_ERROR)) is None]

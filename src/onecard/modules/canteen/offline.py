"""Offline sales charged to the holder's platform purses: what POS terminals decided alone,
recorded after the fact.

The platform never refuses a fact (modules.md X-R12): every uploaded sale is recorded. When its
POS MAC verifies in the key service (:mod:`onecard.modules.canteen.terminalkeys`) and its amount
is sane it is posted: subsidy purse first, then the cash purse, and whatever the purses do not
cover goes to ``Assets:Receivables:Holders``. A sale whose MAC fails is recorded unposted,
flagged ``bad_mac``, and gets a ``bad_mac`` case; the card it names is not frozen, since an
unauthenticated record cannot be trusted to name the right card. The canteen's offline policy
is then checked across every POS: a card whose posted offline sales of one business day exceed
its allowance (amount or count), or that took more than its purses held, gets an
``offline_overspend`` case and is frozen (``canteen_overspend``) until someone settles it
(:mod:`onecard.modules.canteen.cases`).

A POS whose online request timed out decides offline and says so with the tap's ``req_id``.
When the platform had already allowed that tap (its ``device_taps`` row for the same device,
request and card), the holder was charged online: the offline sale is recorded flagged
``decided_online``, linked to the online sale by a ``canteen.sale.decided_online`` audit event,
and never posted. A tap the platform denied, or never saw, leaves the offline sale as above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.keys.service import KeyService
from onecard.modules.canteen import rules
from onecard.modules.canteen.cases import freeze_card, open_case
from onecard.modules.canteen.context import (
    audit_event,
    context_for,
    get_or_raise,
    live_sales,
    offline_allowance,
)
from onecard.modules.canteen.models import PAID_FROM_ACCOUNTS, Merchant, Pos, ReconCase, Sale
from onecard.modules.canteen.rules import CanteenReason
from onecard.modules.canteen.services import (
    KEY,
    entry_split,
    holder_balances,
    record_sale,
    spend_lines,
)
from onecard.modules.canteen.tapflow import sale_key
from onecard.modules.canteen.terminalkeys import RecordMac, verify_record_macs
from onecard.platform.actors import Actor
from onecard.platform.cards.models import Card, CardStatus
from onecard.platform.devices.models import DeviceTap
from onecard.platform.errors import Conflict, InsufficientFunds
from onecard.platform.ledger.accounts import tenant_account
from onecard.platform.ledger.posting import LineSpec, PostingRequest, post

OFFLINE_CODE = "canteen.offline_meal"
DECIDED_ONLINE = "decided_online"  # flag of an offline copy of a sale the platform made online


@dataclass(frozen=True)
class OfflineSale:
    """One purse-charged sale a POS decided offline, read from its stored device record.

    ``signed`` is the exact message the POS's MAC covers (:func:`rules.mac_message` of the
    fields as uploaded); ``card_no`` is the card the platform resolved the credential to (the
    credential itself when unknown); ``occurred_at`` is the platform-corrected time, ``None``
    when the POS clock was invalid; ``req_id`` names the online request that timed out before
    the POS decided alone (``None``: it did not try). The other amounts are the record's, made
    safe to store.
    """

    record_id: int
    device_id: str
    seq: int
    card_no: str
    list_fen: int
    amount_fen: int
    occurred_at: datetime | None
    signed: bytes
    mac: str
    key_version: int | None = None
    period: str | None = None
    flags: tuple[str, ...] = ()
    req_id: str | None = None

    @property
    def key(self) -> str:
        """The sale's idempotency key: its device record, i.e. ``(device, epoch, seq)``."""
        return f"rec:{self.record_id}"

    def record_mac(self) -> RecordMac:
        """What the key service checks."""
        return RecordMac(self.device_id, self.key_version, self.signed, self.mac)


@dataclass(frozen=True)
class OnlineDecision:
    """The platform's allowing decision of a tap that its POS then decided offline: the tap
    row, what it posted, and canteen's online sale of it (``None`` when none was recorded)."""

    tap_id: int
    req_id: str
    entry_ids: tuple[int, ...]
    sale_id: int | None


@dataclass(frozen=True)
class IngestReport:
    """What one upload changed."""

    recorded: int
    duplicates: int
    case_ids: tuple[int, ...]
    frozen_cards: tuple[str, ...]


def ingest_offline_sales(
    session: Session,
    pos: Pos,
    sales: Sequence[OfflineSale],
    *,
    keys: KeyService,
    actor: Actor,
    now: datetime,
) -> IngestReport:
    """Record what ``pos`` sold offline; open cases and freeze cards that broke the policy.

    Idempotent per device record (``(device, epoch, seq)``). MACs are checked in one batch by
    ``keys``. A sale the platform already allowed online (:func:`decided_online`) is recorded
    and never posted. ``actor`` needs ``cards.freeze``.
    """
    if any(s.device_id != pos.device_id for s in sales):
        raise Conflict("a record of another device", device_id=pos.device_id)
    fresh = [s for s in sales if session.scalar(select(Sale.id).where(Sale.key == s.key)) is None]
    macs = [s.record_mac() for s in fresh]
    good = verify_record_macs(session, keys, macs, now=now) if fresh else []
    cases, frozen = set[int](), []
    for item, good_mac in zip(fresh, good, strict=True):
        online = decided_online(session, pos, item)
        sale = _record_one(session, pos, item, good_mac, online, actor=actor, now=now)
        case, freeze = _apply_policy(session, sale, actor=actor, now=now)
        if case is not None:
            cases.add(case.id)
        if freeze and freeze_card(session, sale.card_id, actor=actor, now=now):
            frozen.append(sale.card_no)
    return IngestReport(len(fresh), len(sales) - len(fresh), tuple(sorted(cases)), tuple(frozen))


def decided_online(session: Session, pos: Pos, item: OfflineSale) -> OnlineDecision | None:
    """The platform's decision allowing the tap ``item`` retried offline, if it made one.

    Matched on ``(device, req_id)`` and the card: a tap denied, never seen, or of another
    card is no online decision of this sale (``None``), which is then processed offline.
    """
    if item.req_id is None:
        return None
    tap = session.scalar(
        select(DeviceTap).where(
            DeviceTap.device_pk == pos.device_pk, DeviceTap.req_id == item.req_id
        )
    )
    if tap is None or not tap.allow or tap.card_no != item.card_no:
        return None
    online_key = sale_key(pos.device_id, item.req_id)
    sale_id = session.scalar(select(Sale.id).where(Sale.key == online_key))
    return OnlineDecision(tap.id, item.req_id, tuple(int(e) for e in tap.entry_ids), sale_id)


def _record_one(
    session: Session,
    pos: Pos,
    item: OfflineSale,
    good_mac: bool,
    online: OnlineDecision | None,
    *,
    actor: Actor,
    now: datetime,
) -> Sale:
    occurred = item.occurred_at or now
    card = session.scalar(select(Card).where(Card.card_no == item.card_no))
    flags = _flags(item, card, good_mac, online)
    ctx = context_for(session, pos, card.person_id if card else None, occurred)
    verdict = rules.Verdict(
        True,
        CanteenReason.OK,
        item.list_fen,
        item.list_fen - item.amount_fen,
        item.amount_fen,
        item.period or (ctx.period.key if ctx.period else None),
    )
    entry_id, split = None, {}
    if good_mac and "bad_amount" not in flags and online is None:
        entry_id = _post_offline(session, pos, card, item, occurred, actor=actor, now=now)
        split = entry_split(session, entry_id)
    sale = record_sale(
        session, pos, card, ctx, verdict, split, key=item.key, entry_id=entry_id, items=(),
        source="offline", occurred_at=occurred, now=now, actor=actor, card_no=item.card_no,
        flags=flags, device_seq=item.seq, record_id=item.record_id,
    )  # fmt: skip
    if online is not None:
        _link_online(session, sale, online, actor=actor, now=now)
    return sale


def _link_online(
    session: Session, sale: Sale, online: OnlineDecision, *, actor: Actor, now: datetime
) -> None:
    """Audit ``canteen.sale.decided_online``: the offline sale, and the tap and online sale
    that charged the holder for it."""
    data = {
        "req_id": online.req_id,
        "tap_id": online.tap_id,
        "online_sale_id": online.sale_id,
        "entry_ids": list(online.entry_ids),
    }
    audit_event(session, "canteen.sale.decided_online", sale.id, data, actor, now,
                obj="canteen_sale")  # fmt: skip


def _flags(
    item: OfflineSale, card: Card | None, good_mac: bool, online: OnlineDecision | None
) -> list[str]:
    """The platform's flags plus canteen's own, each once."""
    flags = list(item.flags)
    if online is not None:
        flags.append(DECIDED_ONLINE)  # charged by the online decision: recorded, never posted
    if card is None:
        flags.append("unknown_card")
    elif card.status != CardStatus.ACTIVE.value:
        flags.append("blacklisted_card")
    if not good_mac:
        flags.append("bad_mac")
    if not 0 < item.amount_fen <= rules.MAX_SALE_FEN:
        flags.append("bad_amount")  # a MACed record of a faulty POS: recorded, never posted
    return list(dict.fromkeys(flags))


def _post_offline(
    session: Session,
    pos: Pos,
    card: Card | None,
    item: OfflineSale,
    occurred: datetime,
    *,
    actor: Actor,
    now: datetime,
) -> int:
    """Post what happened: purses as far as they reach, the rest owed by the holder."""
    merchant_account = _merchant_account_id(session, pos)
    request = PostingRequest(
        code=OFFLINE_CODE,
        lines=_offline_lines(session, card, merchant_account, item.amount_fen),
        idempotency_key=f"canteen:{item.key}",
        occurred_at=occurred,
        source=KEY,
        reference={"card_no": item.card_no, "device_id": item.device_id, "seq": item.seq},
        intent={"key": item.key, "amount_fen": item.amount_fen},
    )
    try:
        with session.begin_nested():
            return post(session, request, actor=actor, now=now).id
    except InsufficientFunds:  # balances moved since we read them: everything to receivables
        lines = _offline_lines(session, None, merchant_account, item.amount_fen)
        retry = PostingRequest(**{**request.__dict__, "lines": lines})
        return post(session, retry, actor=actor, now=now).id


def _offline_lines(
    session: Session, card: Card | None, merchant_account_id: int, amount_fen: int
) -> tuple[LineSpec, ...]:
    receivables = tenant_account(session, "receivables")
    if card is None:
        return (LineSpec(merchant_account_id, -amount_fen), LineSpec(receivables.id, amount_fen))
    covered = _covered(session, card.person_id, amount_fen)
    lines = list(spend_lines(session, card.person_id, merchant_account_id, covered) or ())
    if lines:
        lines[0] = LineSpec(merchant_account_id, -amount_fen)
    else:
        lines = [LineSpec(merchant_account_id, -amount_fen)]
    if amount_fen > covered:
        lines.append(LineSpec(receivables.id, amount_fen - covered))
    return tuple(lines)


def _covered(session: Session, person_id: int, amount_fen: int) -> int:
    """The part of ``amount_fen`` the holder's subsidy and cash purses cover together."""
    found = holder_balances(session, person_id)
    return min(amount_fen, sum(max(fen, 0) for _aid, fen in found.values()))


def _merchant_account_id(session: Session, pos: Pos) -> int:
    return int(get_or_raise(session, Merchant, pos.merchant_id).account_id)


# --- the offline policy, across every POS ----------------------------------------------------


def _apply_policy(
    session: Session, sale: Sale, *, actor: Actor, now: datetime
) -> tuple[ReconCase | None, bool]:
    """The case this sale opens or joins (if any), and whether its card must be frozen."""
    if "bad_mac" in sale.flags:
        where = {"seq": sale.device_seq, "record_id": sale.record_id}
        return open_case(session, sale, "bad_mac", where, actor=actor, now=now), False
    if sale.entry_id is None:
        return None, False  # not posted (bad amount): the statement lists it
    card = session.get(Card, sale.card_id) if sale.card_id else None
    day_sales = _posted_offline_sales(session, sale)
    count, total = len(day_sales), sum(s.amount_fen for s in day_sales)
    allowance = offline_allowance(session, card)
    breach = rules.allowance_breach(allowance, count, total)
    receivable = sum(s.receivable_fen for s in day_sales)
    if breach is None and receivable == 0 and "unknown_card" not in sale.flags:
        return None, False
    detail = {
        "reason": breach.value if breach else "purse_shortfall",
        "count": count,
        "total_fen": total,
        "devices": sorted({s.pos_id for s in day_sales}),
    }
    case = open_case(session, sale, "offline_overspend", detail, actor=actor, now=now)
    case.over_fen = max(total - (allowance.amount_fen if allowance else 0), 0)
    case.receivable_fen = receivable
    case.sale_ids = sorted({*case.sale_ids, *(s.id for s in day_sales)})
    session.flush()
    return case, True


def _posted_offline_sales(session: Session, sale: Sale) -> Sequence[Sale]:
    """The card's posted, unrefunded, purse-charged offline sales of the sale's business day,
    from every POS (card-purse sales spend the card's own value, not the allowance)."""
    return session.scalars(
        live_sales(session).where(
            Sale.card_no == sale.card_no,
            Sale.business_day == sale.business_day,
            Sale.source == "offline",
            Sale.paid_from == PAID_FROM_ACCOUNTS,
            Sale.entry_id.is_not(None),
        )
    ).all()

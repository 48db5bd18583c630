"""Offline purchase and CAPP (compound) purchase through the PSAM (epurse.md §7.2, §7.3).

Owns the APDU sequence SELECT → READ 0015 → INITIALIZE → PSAM `80 70` → [READ/UPDATE CAPP
record] → DEBIT → PSAM `80 72`, and the `CappUpdate` a transit or canteen module supplies to
rewrite its compound record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from onecard.device_agents.protocol.clearing import MAC2_NOT_VERIFIED, MAC2_VERIFIED
from onecard.device_agents.terminal import apdus
from onecard.device_agents.terminal.apdus import TYPE_CAPP, TYPE_PURCHASE, InitPurchase
from onecard.device_agents.terminal.cardinfo import select_purse
from onecard.device_agents.terminal.channel import CardChannel, CardGoneError, Exchange
from onecard.device_agents.terminal.pending import PendingTransaction, PurseResult, TornTransaction
from onecard.device_agents.terminal.psam import PsamSession


@dataclass(frozen=True, slots=True)
class CappUpdate:
    """A compound-record rewrite: ``update(old_record_or_None) -> new record`` (with header)."""

    record_id: int
    update: Callable[[bytes | None], bytes]
    sfi: int = 0x1A


def bcd_when(now: datetime) -> tuple[bytes, bytes]:
    """Terminal date (YYYYMMDD) and time (hhmmss) as BCD, from the terminal's own clock."""
    return bytes.fromhex(now.strftime("%Y%m%d")), bytes.fromhex(now.strftime("%H%M%S"))


def purchase(
    card: CardChannel,
    psam: PsamSession,
    *,
    amount: int,
    now: datetime,
    key_index: int = 1,
    capp: CappUpdate | None = None,
    opaque: bytes = bytes(8),
) -> PurseResult:
    """Charge ``amount`` fen offline; a CAPP purchase when ``capp`` is given.

    Raises TornTransaction if the card vanished after INITIALIZE, StatusError on a refusal
    (e.g. 94 01 insufficient balance).
    """
    ex = Exchange(card)
    info = select_purse(ex)
    ttype = TYPE_CAPP if capp else TYPE_PURCHASE
    old_record = _read_capp(ex, capp) if capp else None
    init_apdu = apdus.initialize(ttype, key_index, amount, psam.terminal)
    init = InitPurchase.parse(ex.ok("initialize for purchase", init_apdu, 15))
    date, time = bcd_when(now)
    mac1 = psam.mac1(info, init, amount, ttype, date + time)
    pending = PendingTransaction(
        card=info, ttype=ttype, key_index=key_index, key_version=init.key_version,
        alg_id=init.alg_id, amount=amount, balance_before=init.balance, counter=init.counter,
        terminal=psam.terminal, serial=mac1.tts, date=date, time=time,
        capp_record_id=capp.record_id if capp else 0, opaque=opaque,
    )  # fmt: skip
    try:
        if capp:
            new_record = capp.update(old_record)
            ex.ok("update CAPP cache", apdus.update_capp_data_cache(capp.sfi, new_record))
        answer = ex.ok("debit", apdus.debit_for_purchase(mac1.tts, date, time, mac1.mac1), 8)
    except CardGoneError as err:
        raise TornTransaction(pending) from err
    verified = psam.verify_mac2(answer[4:])
    status = MAC2_VERIFIED if verified else MAC2_NOT_VERIFIED
    return PurseResult(pending.record(answer[:4], status), mac2_ok=verified)


def _read_capp(ex: Exchange, capp: CappUpdate) -> bytes | None:
    response = ex.send("read CAPP record", apdus.read_record(capp.sfi, capp.record_id, by_id=True))
    return response.data if response.sw == b"\x90\x00" else None

"""Recovery after a torn purse transaction (闪卡, epurse.md §5.7, §7.1 step 6, §14).

Owns the decision "did the card commit?" and, if it did, fetching MAC/TAC with GET TRANSACTION
PROVE so the clearing record can still be uploaded. The commit test reads the newest 0018
record and compares counter, type, amount, terminal, date and time with the pending
transaction [D]: unlike a fresh INITIALIZE it needs no PIN for loads and cannot mistake another
transaction for ours.
"""

from __future__ import annotations

from dataclasses import dataclass

from onecard.device_agents.protocol.clearing import MAC2_RECOVERED, ClearingRecord
from onecard.device_agents.terminal import apdus
from onecard.device_agents.terminal.apdus import TYPE_LOAD, Record0018
from onecard.device_agents.terminal.cardinfo import select_purse
from onecard.device_agents.terminal.channel import CardChannel, Exchange, StatusError
from onecard.device_agents.terminal.pending import PendingTransaction
from onecard.device_agents.terminal.psam import PsamSession


class WrongCardError(Exception):
    """A different card was presented for recovery than the one that was torn."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """Outcome of a recovery: ``committed`` says whether the card moved the money; then
    ``record`` is its clearing record (MAC2 status 01) and ``mac2_ok`` the PSAM's verdict on
    the recovered MAC2 (None for loads, or when the PSAM no longer holds the session)."""

    committed: bool
    record: ClearingRecord | None = None
    mac2_ok: bool | None = None


def recover(
    card: CardChannel, pending: PendingTransaction, *, psam: PsamSession | None = None
) -> Recovery:
    """Re-select the card, decide whether the torn transaction committed and prove it if so."""
    ex = Exchange(card)
    info = select_purse(ex)
    if info.asn != pending.card.asn:
        raise WrongCardError("recovery needs the card that was torn")
    if not _committed(ex, pending):
        return Recovery(committed=False)
    proof = ex.ok("get transaction prove",
                  apdus.get_transaction_prove(pending.ttype, pending.counter), 8)  # fmt: skip
    mac, tac = proof[:4], proof[4:]
    mac2_ok = None
    if psam is not None and pending.ttype != TYPE_LOAD:
        mac2_ok = psam.verify_mac2(mac)
    return Recovery(True, pending.record(tac, MAC2_RECOVERED), mac2_ok)


def _committed(ex: Exchange, pending: PendingTransaction) -> bool:
    response = ex.send("read 0018", apdus.read_record(0x18, 1))
    if response.sw == b"\x6a\x83":
        return False  # no transaction at all on this card yet
    if response.sw != b"\x90\x00" or len(response.data) != 23:
        raise StatusError("read 0018", response.sw)
    newest = Record0018.parse(response.data)
    wanted = (pending.counter, pending.amount, pending.ttype, pending.terminal, pending.date,
              pending.time)  # fmt: skip
    return (newest.counter, newest.amount, newest.ttype, newest.terminal, newest.date,
            newest.time) == wanted  # fmt: skip

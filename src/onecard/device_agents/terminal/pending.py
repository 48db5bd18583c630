"""What a terminal remembers about a purse transaction between INITIALIZE and its answer.

Owns `PendingTransaction` (everything needed to finish, prove or write off a transaction whose
CREDIT/DEBIT answer was lost), `TornTransaction` (raised with it) and `PurseResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from onecard.device_agents.protocol.clearing import ClearingRecord
from onecard.device_agents.terminal.cardinfo import CardInfo


@dataclass(frozen=True, slots=True)
class PendingTransaction:
    """A purse transaction after INITIALIZE, before the card's CREDIT/DEBIT answer arrived."""

    card: CardInfo
    ttype: int
    key_index: int
    key_version: int
    alg_id: int
    amount: int
    balance_before: int
    counter: int
    terminal: bytes
    serial: int
    date: bytes
    time: bytes
    capp_record_id: int = 0
    opaque: bytes = bytes(8)

    def record(self, tac: bytes, mac2_status: int) -> ClearingRecord:
        """The §12 clearing record of this transaction once its TAC is known."""
        return ClearingRecord(
            scheme=self.card.scheme, alg_id=self.alg_id, key_version=self.key_version,
            key_index=self.key_index, issuer_factor=self.card.issuer_factor,
            asn=self.card.asn.rjust(10, b"\x00"), card_type=self.card.card_type,
            ttype=self.ttype, amount=self.amount, balance_before=self.balance_before,
            counter=self.counter, terminal=self.terminal, serial=self.serial, date=self.date,
            time=self.time, tac=tac, mac2_status=mac2_status,
            capp_record_id=self.capp_record_id, opaque=self.opaque,
        )  # fmt: skip

    def with_when(self, date: bytes, time: bytes, serial: int) -> PendingTransaction:
        return replace(self, date=date, time=time, serial=serial)


class TornTransaction(Exception):
    """The card stopped answering after INITIALIZE; run `recovery.recover` with ``pending``."""

    def __init__(self, pending: PendingTransaction) -> None:
        self.pending = pending
        super().__init__(f"transaction type {pending.ttype:02X} torn; recovery needed")


@dataclass(frozen=True, slots=True)
class PurseResult:
    """A completed purse transaction: its clearing record and whether the card's MAC2 checked
    out (purchases: verified by the PSAM; loads: the card accepted the host's MAC2)."""

    record: ClearingRecord
    mac2_ok: bool

    @property
    def balance_after(self) -> int:
        return self.record.balance_after

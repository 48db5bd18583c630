"""Online load (圈存) from the terminal's side (epurse.md §7.1).

Owns the APDU sequence SELECT → READ 0015 → VERIFY PIN → INITIALIZE FOR LOAD → host HSM
(verify MAC1, make MAC2) → CREDIT FOR LOAD, and the `LoadHsm` contract the host side fulfils.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from onecard.device_agents.protocol.clearing import MAC2_VERIFIED
from onecard.device_agents.terminal import apdus
from onecard.device_agents.terminal.apdus import TYPE_LOAD, InitLoad
from onecard.device_agents.terminal.cardinfo import CardInfo, select_purse
from onecard.device_agents.terminal.channel import CardChannel, CardGoneError, Exchange
from onecard.device_agents.terminal.pending import PendingTransaction, PurseResult, TornTransaction


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """What the terminal sends to the host for a load (§7.1 step 3)."""

    card: CardInfo
    key_index: int
    key_version: int
    alg_id: int
    balance: int
    amount: int
    counter: int
    terminal: bytes
    rnd: bytes = field(repr=False)
    mac1: bytes


@dataclass(frozen=True, slots=True)
class LoadAuthorisation:
    """The host's answer: MAC2 with the host date/time it MACed, and its serial for the record."""

    mac2: bytes
    date: bytes
    time: bytes
    host_serial: int


class LoadHsm(Protocol):
    """Host side of a load: verifies MAC1 (raising if bad), debits the account, returns MAC2."""

    def verify_load_mac1_and_make_mac2(self, request: LoadRequest) -> LoadAuthorisation: ...


def load(
    card: CardChannel,
    hsm: LoadHsm,
    *,
    amount: int,
    terminal: bytes,
    pin: bytes | None = None,
    key_index: int = 1,
) -> PurseResult:
    """Load ``amount`` fen onto the card. Raises TornTransaction if the card vanished after
    INITIALIZE (recover with `recovery.recover`), StatusError on a refusal."""
    ex = Exchange(card)
    info = select_purse(ex)
    if pin is not None:
        ex.ok("verify PIN", apdus.verify_pin(pin))
    init = InitLoad.parse(
        ex.ok("initialize for load", apdus.initialize(TYPE_LOAD, key_index, amount, terminal), 16)
    )
    request = LoadRequest(info, key_index, init.key_version, init.alg_id, init.balance, amount,
                          init.counter, terminal, init.rnd, init.mac1)  # fmt: skip
    auth = hsm.verify_load_mac1_and_make_mac2(request)
    pending = _pending(request, auth)
    try:
        tac = ex.ok("credit for load", apdus.credit_for_load(auth.date, auth.time, auth.mac2), 4)
    except CardGoneError as err:
        raise TornTransaction(pending) from err
    return PurseResult(pending.record(tac, MAC2_VERIFIED), mac2_ok=True)


def _pending(request: LoadRequest, auth: LoadAuthorisation) -> PendingTransaction:
    return PendingTransaction(
        card=request.card, ttype=TYPE_LOAD, key_index=request.key_index,
        key_version=request.key_version, alg_id=request.alg_id, amount=request.amount,
        balance_before=request.balance, counter=request.counter, terminal=request.terminal,
        serial=auth.host_serial, date=auth.date, time=auth.time,
    )  # fmt: skip

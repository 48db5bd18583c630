"""The canteen POS personality in the agent: the pure personality
(`onecard.device_agents.personalities.pos`) with the agent's store, clock and lists.

Online, the platform's decision is shown with the POS's text and beep. Offline, the POS decides
on its own counters (kept in the agent's store with each sale's record, so a restart forgets
nothing) and its configuration bundle's setup: an allowed sale becomes a ``canteen_sale``
record MACed with the POS's key, a refused one a ``tap`` record with the canteen reason as its
``detail``. Every decision is logged with its display text and beep, never a key.

The MAC key: ``onecard canteen pos-key`` prints it wrapped under the key application's
transport key; :func:`read_pos_key` unwraps that document with the transport key (the
custodians' components XORed, given to ``onecard agent --transport-key`` or
``ONECARD_TRANSPORT_KEY``) and `PosTerminal.install_key` keeps the clear key in the agent's
local store, so later starts need neither. Without a key the POS makes no offline sales.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from onecard.device_agents.personalities.pos import (
    OfflineBook,
    PosSetup,
    Screen,
    decide,
    device_instant,
    screen,
    screen_for_decision,
    situation,
)
from onecard.device_agents.personalities.pos_records import (
    PosKey,
    PosKeyError,
    sale_fields,
    sale_mac,
    unwrap_pos_key,
)
from onecard.device_agents.personalities.pos_rules import Verdict
from onecard.device_agents.protocol.codes import ReasonCode
from onecard.device_agents.protocol.messages import Record
from onecard.device_agents.runtime.agent import Agent, LocalDecision, Presented
from onecard.device_agents.runtime.store import AgentStore

log = logging.getLogger(__name__)

BOOK_SETTING = "pos.book"
KEY_SETTING = "pos.mac_key"


def read_pos_key(path: Path, transport_key_hex: str) -> PosKey:
    """The POS key in the document at ``path`` (what ``onecard canteen pos-key`` printed),
    unwrapped with the transport key given as hex; `PosKeyError` when either is unusable."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        transport = bytes.fromhex(transport_key_hex)
    except (OSError, ValueError):
        raise PosKeyError("unreadable key document or transport key (hex expected)") from None
    if not isinstance(document, Mapping):
        raise PosKeyError("the key document is not a JSON object")
    return unwrap_pos_key(document, transport)


class PosTerminal:
    """`runtime.personality.Personality` of a canteen POS (see the module docstring)."""

    def __init__(self, device_id: str, store: AgentStore) -> None:
        self.device_id = device_id
        self.store = store
        self.setup = PosSetup()
        self.book = OfflineBook.from_json(store.get(BOOK_SETTING, ""))
        self.key = _stored_key(store)

    def install_key(self, key: PosKey) -> None:
        """Keep ``key`` in the local store (replacing an older version) and use it now."""
        self.store.put(KEY_SETTING, key.to_text())
        self.key = key

    # Personality -------------------------------------------------------------------------

    def configure(self, body: Mapping[str, Any]) -> None:
        """Take the POS setup from a verified bundle body."""
        self.setup = PosSetup.from_body(body)
        offline = "on" if self.setup.allowance else "off"
        if self.setup.allowance and self.key is None:
            offline = "off (no MAC key installed)"
        log.info(
            "%s: POS %s mode, %d meal periods, offline sales %s",
            self.device_id,
            self.setup.mode.value,
            len(self.setup.periods),
            offline,
        )

    def online(self, decision: LocalDecision, presented: Presented) -> LocalDecision:
        """The platform's decision with the POS's text (the amount keyed, the new balance)."""
        shown = screen_for_decision(
            decision.reason,
            decision.detail,
            decision.display,
            decision.balance,
            lang=self.setup.lang,
            amount_fen=presented.amount or 0,
        )
        return self._show(decision, shown)

    def offline(self, agent: Agent, presented: Presented, req_id: str | None) -> LocalDecision:
        """Decide alone on the POS's counters and setup; store the sale or the refusal."""
        device_ms, valid = agent.clock.now_ms(), agent.clock_valid()
        verdict, day = self._decide(agent, presented, device_ms)
        flags = ("offline",) if valid else ("offline", "time_untrusted")
        base: dict[str, Any] = {
            "device_time": device_ms, "clock_valid": valid, "flags": flags, "req_id": req_id,
        }  # fmt: skip
        if verdict.allow:
            record = self._store_sale(agent, presented, verdict, day, base)
        else:
            record = agent.store_record(
                **base,
                credential=presented.credential,
                allow=False,
                reason=verdict.code,
                detail=verdict.reason.value,
            )
        shown = screen(verdict.reason, lang=self.setup.lang, amount_fen=verdict.amount_fen)
        decision = LocalDecision(
            verdict.allow,
            verdict.code,
            False,
            detail=verdict.reason.value,
            flags=flags,
            seq=record.seq,
        )
        return self._show(decision, shown)

    # ---------------------------------------------------------------------------------------

    def _decide(self, agent: Agent, presented: Presented, device_ms: int) -> tuple[Verdict, date]:
        """The verdict on ``presented`` and the business day it counts for."""
        # Meal periods follow the best time the POS knows (its clock corrected by the last
        # sync); the record keeps the POS clock's own time for the platform to correct.
        now = device_instant(device_ms + (agent.offset_ms or 0))
        where = situation(self.setup, self.book, presented.credential.value, now)
        allowance = self.setup.allowance if self.key is not None else None
        verdict = decide(
            self.setup,
            where,
            self.setup.rule,
            allowance,
            blacklisted=agent.blacklisted(presented.credential),
            list_fen=presented.amount,
        )
        return verdict, where.day

    def _store_sale(
        self,
        agent: Agent,
        presented: Presented,
        verdict: Verdict,
        day: date,
        base: Mapping[str, Any],
    ) -> Record:
        """Store the sale's record, sealed with its seq, and the counters with the sale in them
        in the same transaction; the counters in memory change only once both are stored."""
        key = self.key
        if key is None:  # decide() allows nothing without an allowance, and there is none
            raise RuntimeError("a POS without a MAC key cannot have allowed an offline sale")
        credential = presented.credential.model_dump(mode="json")
        wire = sale_fields(verdict, credential=credential, device_time=base["device_time"])
        after = self.book.copy()
        after.add(credential["value"], verdict, day)
        epoch = agent.store.epoch

        def seal(seq: int) -> dict[str, Any]:
            mac = sale_mac(wire, key, device_id=self.device_id, epoch=epoch, seq=seq)
            return {"extra": {**wire["extra"], **mac}}

        # The store builds a protocol Record, which wants the credential and reason as models.
        typed = {"credential": presented.credential, "reason": ReasonCode.OK}
        record = agent.store_record(
            **{**base, **wire, **typed}, seal=seal, state={BOOK_SETTING: after.to_json()}
        )
        self.book = after
        return record

    def _show(self, decision: LocalDecision, shown: Screen) -> LocalDecision:
        """``decision`` with the POS's display and beep, logged for the operator."""
        where = "online" if decision.online else "offline"
        log.info("%s: %s [beep %s] (%s)", self.device_id, shown.text, shown.beep.code, where)
        return dataclasses.replace(decision, display=shown.text, beep=shown.beep.code)


def _stored_key(store: AgentStore) -> PosKey | None:
    """The key kept in the store, if any; an unreadable one is logged and not used."""
    text = store.get(KEY_SETTING, "")
    if not text:
        return None
    try:
        return PosKey.from_text(text)
    except PosKeyError as err:
        log.error("%s: %s; offline sales stay off until a key is installed", store.device, err)
        return None

"""Electronic-purse commands of the emulated CPU card (epurse.md §5.1–§5.7, §6, §14).

Owns INITIALIZE FOR LOAD / PURCHASE / CAPP PURCHASE, CREDIT FOR LOAD, DEBIT FOR (CAPP) PURCHASE,
UPDATE CAPP DATA CACHE, GET BALANCE and GET TRANSACTION PROVE. Money moves only in
`credit_for_load` and `debit_for_purchase`, after a verified MAC, through one atomic commit of
balance, counter, 0018 record, cached CAPP records and the proof for `80 5A`.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from typing import TYPE_CHECKING

from onecard.device_agents.emulators.apdu import (
    SW,
    ApduError,
    Command,
    ok,
    require_length,
    require_p1p2,
)
from onecard.device_agents.emulators.cpu_files import check_capp_record
from onecard.device_agents.emulators.cpu_image import CAPP_SFIS, CardImage, Proof, Purse
from onecard.device_agents.emulators.cpu_session import Pending
from onecard.keys import algorithms as alg
from onecard.keys import macdata

if TYPE_CHECKING:
    from onecard.device_agents.emulators.cpu_card import CpuCard

TYPE_LOAD = macdata.TYPE_LOAD
TYPE_PURCHASE = macdata.TYPE_PURCHASE
TYPE_CAPP = macdata.TYPE_CAPP_PURCHASE
_INIT_KINDS = {0x00: TYPE_LOAD, 0x01: TYPE_PURCHASE, 0x03: TYPE_CAPP}
_COUNTER_MAX = 0xFFFF


def initialize(card: CpuCard, cmd: Command) -> bytes:
    """`80 50 P1 02 0B keyIdx amount(4) T(6)`: P1 00 load, 01 purchase, 03 CAPP purchase."""
    ttype = _INIT_KINDS.get(cmd.p1)
    if ttype is None or cmd.p2 != 0x02:
        raise ApduError(SW.WRONG_P1P2)
    require_length(cmd, 11)
    card.require_adf()
    key_index, amount, terminal = cmd.data[0], int.from_bytes(cmd.data[1:5], "big"), cmd.data[5:]
    if ttype == TYPE_LOAD:
        return _initialize_for_load(card, key_index, amount, terminal)
    return _initialize_for_purchase(card, ttype, key_index, amount, terminal)


def _card_key(card: CpuCard, name: str, key_index: int) -> tuple[int, bytes]:
    key = card.image.key(name, key_index)
    if key is None:
        raise ApduError(SW.KEY_INDEX_UNSUPPORTED)
    if card.image.key_locked(name, key_index):
        raise ApduError(SW.AUTH_BLOCKED)
    return key.version, key.key


def _initialize_for_load(card: CpuCard, key_index: int, amount: int, terminal: bytes) -> bytes:
    image = card.image
    if image.pin is not None and not card.session.pin_ok:
        raise ApduError(SW.SECURITY_NOT_SATISFIED)
    version, dlk = _card_key(card, "DLK", key_index)
    purse = image.purse
    if purse.online_counter >= _COUNTER_MAX or purse.balance + amount > image.max_balance:
        raise ApduError(SW.OUT_OF_RANGE)
    rnd = card.rng(4)
    session_key = alg.load_session_key(image.alg, dlk, rnd, purse.online_counter)
    mac1 = alg.mac(image.alg, session_key, macdata.load_mac1_data(purse.balance, amount, terminal))
    pending = _pending(card, TYPE_LOAD, key_index, version, amount, terminal, rnd)
    card.session.pending = replace(pending, session_key=session_key)
    head = purse.balance.to_bytes(4, "big") + purse.online_counter.to_bytes(2, "big")
    return ok(head + bytes((version, image.alg_id)) + rnd + mac1)


def _initialize_for_purchase(
    card: CpuCard, ttype: int, key_index: int, amount: int, terminal: bytes
) -> bytes:
    image = card.image
    version, _ = _card_key(card, "DPK", key_index)
    purse = image.purse
    if purse.offline_counter >= _COUNTER_MAX:
        raise ApduError(SW.OUT_OF_RANGE)
    if amount > purse.balance:
        raise ApduError(SW.INSUFFICIENT_BALANCE)
    rnd = card.rng(4)
    card.session.pending = _pending(card, ttype, key_index, version, amount, terminal, rnd)
    head = purse.balance.to_bytes(4, "big") + purse.offline_counter.to_bytes(2, "big")
    return ok(head + purse.overdraft.to_bytes(3, "big") + bytes((version, image.alg_id)) + rnd)


def _pending(
    card: CpuCard,
    ttype: int,
    key_index: int,
    version: int,
    amount: int,
    terminal: bytes,
    rnd: bytes,
) -> Pending:
    purse = card.image.purse
    counter = purse.online_counter if ttype == TYPE_LOAD else purse.offline_counter
    return Pending(ttype, key_index, version, amount, terminal, purse.balance, counter, rnd)


def credit_for_load(card: CpuCard, cmd: Command) -> bytes:
    """`80 52 00 00 0B date(4) time(3) MAC2(4)` → TAC. Needs the INITIALIZE FOR LOAD before it."""
    pending = card.take_pending()
    require_p1p2(cmd, 0, 0)
    require_length(cmd, 11)
    if pending.ttype != TYPE_LOAD or pending.session_key is None:
        raise ApduError(SW.CONDITIONS_NOT_SATISFIED)
    date, time, mac2 = cmd.data[0:4], cmd.data[4:7], cmd.data[7:11]
    data = macdata.load_mac2_data(pending.amount, pending.terminal, date, time)
    _check_mac(card, "DLK", pending, alg.mac(card.image.alg, pending.session_key, data), mac2)
    new_balance = pending.balance + pending.amount
    tac_data = macdata.load_tac_data(
        new_balance, pending.counter, pending.amount, pending.terminal, date, time
    )
    tac = _tac(card, pending, tac_data)
    purse = replace(card.image.purse, balance=new_balance, online_counter=pending.counter + 1)
    _commit_purse(card, purse, pending, date + time, Proof(TYPE_LOAD, pending.counter, mac2, tac))
    return ok(tac)


def debit_for_purchase(card: CpuCard, cmd: Command) -> bytes:
    """`80 54 01 00 0F TTS(4) date(4) time(3) MAC1(4)` → TAC ‖ MAC2 (purchase and CAPP)."""
    capp_cache = dict(card.session.capp_cache)
    pending = card.take_pending()
    require_p1p2(cmd, 0x01, 0x00)
    require_length(cmd, 15)
    if pending.ttype not in (TYPE_PURCHASE, TYPE_CAPP):
        raise ApduError(SW.CONDITIONS_NOT_SATISFIED)
    tts, date, time, mac1 = cmd.data[0:4], cmd.data[4:8], cmd.data[8:11], cmd.data[11:15]
    image = card.image
    _, dpk = _card_key(card, "DPK", pending.key_index)
    sk = alg.purchase_session_key(image.alg, dpk, pending.rnd, pending.counter, tts)
    data = macdata.purchase_mac1_data(pending.amount, pending.terminal, date, time, pending.ttype)
    _check_mac(card, "DPK", pending, alg.mac(image.alg, sk, data), mac1)
    if pending.amount > image.purse.balance:  # defensive: the INITIALIZE already checked
        raise ApduError(SW.INSUFFICIENT_BALANCE)
    mac2 = alg.mac(image.alg, sk, macdata.purchase_mac2_data(pending.amount))
    tts_value = int.from_bytes(tts, "big")
    tac_data = macdata.purchase_tac_data(
        pending.amount, pending.terminal, tts_value, date, time, pending.ttype
    )
    tac = _tac(card, pending, tac_data)
    purse = replace(
        image.purse, balance=pending.balance - pending.amount, offline_counter=pending.counter + 1
    )
    proof = Proof(pending.ttype, pending.counter, mac2, tac)
    _commit_purse(card, purse, pending, date + time, proof, capp_cache)
    return ok(tac + mac2)


def _check_mac(card: CpuCard, name: str, pending: Pending, expected: bytes, got: bytes) -> None:
    """Compare a MAC; a failure is counted against the key (persisted) and answers 93 02."""
    good = hmac.compare_digest(expected, got)
    already_clean = card.image.mac_failures.get(f"{name}{pending.key_index:02X}", 0) == 0
    if not (good and already_clean):
        card.commit(card.image.with_mac_failure(name, pending.key_index, failed=not good))
    if not good:
        raise ApduError(SW.MAC_INVALID)


def _tac(card: CpuCard, pending: Pending, data: bytes) -> bytes:
    dtk = card.image.key("DTK", pending.key_index) or next(iter(card.image.keys["DTK"].values()))
    return alg.mac(card.image.alg, alg.tac_key(card.image.alg, dtk.key), data)


def _commit_purse(
    card: CpuCard,
    purse: Purse,
    pending: Pending,
    when: bytes,
    proof: Proof,
    capp_cache: dict[tuple[int, int], bytes] | None = None,
) -> None:
    """One atomic commit: purse, 0018 record, cached CAPP records, proof (§14)."""
    image: CardImage = card.image
    record = _record_0018(pending, when)
    capp = {s: dict(r) for s, r in image.capp.items()}
    for (sfi, record_id), content in (capp_cache or {}).items():
        capp.setdefault(sfi, {})[record_id] = content
    card.commit(replace(image.with_record(record), purse=purse, capp=capp, proof=proof))


def _record_0018(pending: Pending, when: bytes) -> bytes:
    """0018 record: counter(2) overdraft(3) amount(4) type(1) T(6) date(4) time(3)."""
    head = pending.counter.to_bytes(2, "big") + bytes(3) + pending.amount.to_bytes(4, "big")
    return head + bytes((pending.ttype,)) + pending.terminal + when


def update_capp_data_cache(card: CpuCard, cmd: Command) -> bytes:
    """`80 DC id (SFI<<3) Lc record`: buffer a compound record until the CAPP DEBIT commits."""
    pending = card.session.pending
    if pending is None or pending.ttype != TYPE_CAPP:
        card.session.pending = None
        card.session.capp_cache.clear()
        raise ApduError(SW.CONDITIONS_NOT_SATISFIED)
    sfi = cmd.p2 >> 3
    if sfi not in CAPP_SFIS or cmd.p2 & 0x07 or cmd.p1 == 0:
        raise ApduError(SW.WRONG_P1P2 if sfi in CAPP_SFIS else SW.FILE_NOT_FOUND)
    card.session.capp_cache[(sfi, cmd.p1)] = check_capp_record(card, sfi, cmd.p1, cmd.data)
    return ok()


def get_balance(card: CpuCard, cmd: Command) -> bytes:
    """`80 5C 00 02 04` → balance(4); MOT `80 5C 01 02` → secondary purse (always 0 here [A])."""
    card.require_adf()
    if cmd.data:
        raise ApduError(SW.WRONG_LENGTH)
    if cmd.p2 != 0x02 or cmd.p1 not in (0x00, 0x01):
        raise ApduError(SW.WRONG_P1P2)
    if cmd.p1 == 0x01:
        if card.image.profile != "mot":
            raise ApduError(SW.WRONG_P1P2)
        return ok(bytes(4))
    return ok(card.image.purse.balance.to_bytes(4, "big"))


def get_transaction_prove(card: CpuCard, cmd: Command) -> bytes:
    """`80 5A 00 type 02 counter` → MAC ‖ TAC of the last purse transaction, else 94 06.

    Accepts the counter the interrupted INITIALIZE returned or the one a fresh INITIALIZE
    returns afterwards (one ETC tool's convention, §5.7 [A]); nothing else.
    """
    card.require_adf()
    require_length(cmd, 2)
    if cmd.p1 != 0x00:
        raise ApduError(SW.WRONG_P1P2)
    proof, counter = card.image.proof, int.from_bytes(cmd.data, "big")
    if proof is None or proof.ttype != cmd.p2 or counter not in (proof.counter, proof.counter + 1):
        raise ApduError(SW.PROOF_UNAVAILABLE)
    return ok(proof.mac + proof.tac)

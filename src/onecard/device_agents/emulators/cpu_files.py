"""ISO 7816-4 file and security commands of the emulated CPU card (epurse.md §4, §5.8).

Owns SELECT, READ BINARY, READ RECORD, GET CHALLENGE, VERIFY PIN and the secure-messaging
updates (`04 D6`, `04 DC`, MAC per §2.3 with the card's DAMK). Every function takes the card and
a parsed command and returns response data ‖ 90 00, or raises ApduError with the status word.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from onecard.device_agents.emulators.apdu import (
    SW,
    ApduError,
    Command,
    ok,
    pin_retries_sw,
    require_length,
)
from onecard.device_agents.emulators.cpu_image import CAPP_SFIS
from onecard.keys import algorithms as alg

if TYPE_CHECKING:
    from onecard.device_agents.emulators.cpu_card import CpuCard

PSE_NAME = b"1PAY.SYS.DDF01"
MF_FID = b"\x3f\x00"
EF_FIDS = {b"\x00\x15": 0x15, b"\x00\x16": 0x16, b"\x00\x18": 0x18, b"\x00\x19": 0x19,
           b"\x00\x1a": 0x1A}  # fmt: skip
CAPP_RECORD_MAX = 0x80
CAPP_RECORDS_PER_FILE = 8


# -- selection ----------------------------------------------------------------------------------
def select(card: CpuCard, cmd: Command) -> bytes:
    """SELECT by DF name (P1 04) or by FID (P1 00). Selecting a DF resets the security state."""
    if cmd.p1 == 0x04:
        return _select_by_name(card, cmd)
    if cmd.p1 == 0x00:
        return _select_by_fid(card, cmd)
    raise ApduError(SW.WRONG_P1P2)


def _select_by_name(card: CpuCard, cmd: Command) -> bytes:
    if cmd.data == card.profile.aid:
        _enter_df(card, adf=True)
        return _fci_answer(card, cmd)
    if cmd.data == PSE_NAME:
        _enter_df(card, adf=False)
        return _fci_answer(card, cmd, pse=True)
    raise ApduError(SW.FILE_NOT_FOUND)


def _select_by_fid(card: CpuCard, cmd: Command) -> bytes:
    require_length(cmd, 2)
    if cmd.data == MF_FID:
        _enter_df(card, adf=False)
        return ok()
    if cmd.data == card.profile.fid:
        _enter_df(card, adf=True)
        return _fci_answer(card, cmd)
    sfi = EF_FIDS.get(cmd.data)
    if sfi is None or not card.session.in_adf:
        raise ApduError(SW.FILE_NOT_FOUND)
    card.session.current_sfi = sfi
    return ok()


def _enter_df(card: CpuCard, *, adf: bool) -> None:
    card.session.in_adf = adf
    card.session.current_sfi = None
    card.session.pin_ok = False


def _fci_answer(card: CpuCard, cmd: Command, *, pse: bool = False) -> bytes:
    if cmd.p2 & 0x0C == 0x0C:  # "no response data requested"
        return ok()
    return ok(
        fci(card.profile.aid, card.image.ef15) if not pse else _tlv(0x6F, _tlv(0x84, PSE_NAME))
    )


def fci(aid: bytes, ef15: bytes) -> bytes:
    """FCI as observed on T-Union cards: 6F{84 AID, A5{9F08 01 02, 9F0C 1E <EF 0015>}}."""
    prop = _tlv(0x9F08, b"\x02") + _tlv(0x9F0C, ef15)
    return _tlv(0x6F, _tlv(0x84, aid) + _tlv(0xA5, prop))


def _tlv(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes(2 if tag > 0xFF else 1, "big")
    return tag_bytes + bytes((len(value),)) + value


# -- reading ------------------------------------------------------------------------------------
def read_binary(card: CpuCard, cmd: Command) -> bytes:
    """READ BINARY by SFI (P1 = 80|SFI, P2 = offset) or on the current EF (offset P1P2)."""
    if cmd.data:
        raise ApduError(SW.WRONG_LENGTH)
    if cmd.p1 & 0x80:
        sfi, offset = cmd.p1 & 0x1F, cmd.p2
    else:
        sfi, offset = card.session.current_sfi, (cmd.p1 << 8) | cmd.p2
    content = _binary_file(card, sfi)
    if offset > len(content):
        raise ApduError(SW.WRONG_OFFSET)
    size = len(content) - offset if cmd.le in (None, 256) else cmd.le
    return ok(content[offset : offset + size])


def _binary_file(card: CpuCard, sfi: int | None) -> bytes:
    if not card.session.in_adf or sfi not in EF_FIDS.values():
        raise ApduError(SW.FILE_NOT_FOUND)
    if sfi == 0x15:
        return card.image.ef15
    if sfi == 0x16:
        return card.image.ef16
    raise ApduError(SW.COMMAND_NOT_ALLOWED)  # a record file read as binary


def read_record(card: CpuCard, cmd: Command) -> bytes:
    """READ RECORD: P2 = SFI<<3|4 reads record number P1; P2 = SFI<<3|0 the record with id P1."""
    if cmd.data:
        raise ApduError(SW.WRONG_LENGTH)
    sfi, mode = (cmd.p2 >> 3) or card.session.current_sfi, cmd.p2 & 0x07
    if not card.session.in_adf or sfi not in (0x18, *CAPP_SFIS):
        raise ApduError(SW.FILE_NOT_FOUND)
    if mode not in (0, 4) or cmd.p1 == 0:
        raise ApduError(SW.WRONG_P1P2)
    record = _record_0018(card, cmd.p1) if sfi == 0x18 else _capp_record(card, sfi, cmd.p1, mode)
    return ok(record if cmd.le in (None, 256) else record[: cmd.le])


def _record_0018(card: CpuCard, number: int) -> bytes:
    records = card.image.records
    if number > len(records):
        raise ApduError(SW.RECORD_NOT_FOUND)
    return records[number - 1]


def _capp_record(card: CpuCard, sfi: int, p1: int, mode: int) -> bytes:
    records = card.image.capp.get(sfi, {})
    if mode == 0:
        found = records.get(p1)
    else:
        ordered = [records[i] for i in sorted(records)]
        found = ordered[p1 - 1] if p1 <= len(ordered) else None
    if found is None:
        raise ApduError(SW.RECORD_NOT_FOUND)
    return found


# -- security -----------------------------------------------------------------------------------
def get_challenge(card: CpuCard, cmd: Command) -> bytes:
    """GET CHALLENGE: 4 or 8 random bytes, kept for the next secure-messaging command."""
    if cmd.data or (cmd.p1, cmd.p2) != (0, 0):
        raise ApduError(SW.WRONG_P1P2 if not cmd.data else SW.WRONG_LENGTH)
    if cmd.le not in (4, 8):
        raise ApduError(SW.WRONG_LENGTH)
    card.session.challenge = card.rng(cmd.le)
    return ok(card.session.challenge)


def verify_pin(card: CpuCard, cmd: Command) -> bytes:
    """VERIFY PIN: 63 Cx on a wrong PIN (x tries left, persisted), 69 83 once blocked."""
    if (cmd.p1, cmd.p2) != (0, 0):
        raise ApduError(SW.WRONG_P1P2)
    require_length(cmd, 2, 3, 4, 5, 6)
    image = card.image
    if image.pin is None:
        card.session.pin_ok = True
        return ok()
    if image.pin_tries_left <= 0:
        raise ApduError(SW.AUTH_BLOCKED)
    if hmac.compare_digest(cmd.data, image.pin):
        if image.pin_tries_left != image.pin_max_tries:
            card.update(pin_tries_left=image.pin_max_tries)
        card.session.pin_ok = True
        return ok()
    card.update(pin_tries_left=image.pin_tries_left - 1)
    raise ApduError(pin_retries_sw(image.pin_tries_left - 1))


def check_sm_mac(card: CpuCard, cmd: Command) -> bytes:
    """Verify the 4-byte secure-messaging MAC of a `04 xx` command; return the plain data.

    MAC input: header ‖ Lc ‖ data (Lc counting the MAC) under the DAMK, IV = the last GET
    CHALLENGE zero-padded to a block (§2.3; SM4 analogous [A]). The challenge is one-shot.
    """
    challenge, card.session.challenge = card.session.challenge, None
    if challenge is None:
        raise ApduError(SW.DATA_INVALID)
    if len(cmd.data) < 5:
        raise ApduError(SW.WRONG_LENGTH)
    damk = next(iter(card.image.keys.get("DAMK", {}).values()), None)
    if damk is None:
        raise ApduError(SW.KEY_NOT_FOUND)
    plain, mac = cmd.data[:-4], cmd.data[-4:]
    iv = challenge.ljust(card.image.alg.block_size, b"\x00")
    header = cmd.header + bytes((len(cmd.data),))
    expected = alg.mac(card.image.alg, damk.key, header + plain, iv)
    if not hmac.compare_digest(mac, expected):
        raise ApduError(SW.SM_MAC_INCORRECT)
    return plain


def update_binary_sm(card: CpuCard, cmd: Command) -> bytes:
    """UPDATE BINARY with MAC: `04 D6 (80|SFI) offset Lc data MAC` on EF 0015 / 0016."""
    card.require_adf()
    if not cmd.p1 & 0x80 or (cmd.p1 & 0x1F) not in (0x15, 0x16):
        raise ApduError(SW.FILE_NOT_FOUND)
    plain = check_sm_mac(card, cmd)
    name = "ef15" if cmd.p1 & 0x1F == 0x15 else "ef16"
    content: bytes = getattr(card.image, name)
    if cmd.p2 + len(plain) > len(content):
        raise ApduError(SW.WRONG_OFFSET)
    card.update(**{name: content[: cmd.p2] + plain + content[cmd.p2 + len(plain) :]})
    return ok()


def update_record_sm(card: CpuCard, cmd: Command) -> bytes:
    """UPDATE RECORD with MAC on a CAPP file: `04 DC id (SFI<<3) Lc record MAC`."""
    card.require_adf()
    sfi = cmd.p2 >> 3
    if sfi not in CAPP_SFIS:
        raise ApduError(SW.FILE_NOT_FOUND)
    if cmd.p2 & 0x07 != 0 or cmd.p1 == 0:
        raise ApduError(SW.WRONG_P1P2)
    record = check_capp_record(card, sfi, cmd.p1, check_sm_mac(card, cmd))
    capp = {s: dict(r) for s, r in card.image.capp.items()}
    capp.setdefault(sfi, {})[cmd.p1] = record
    card.update(capp=capp)
    return ok()


def check_capp_record(card: CpuCard, sfi: int, record_id: int, record: bytes) -> bytes:
    """Validate a compound record: header id = P1, length byte = bytes after it, file room."""
    if len(record) < 3 or len(record) > CAPP_RECORD_MAX:
        raise ApduError(SW.WRONG_LENGTH)
    if record[0] != record_id or record[1] != len(record) - 2:
        raise ApduError(SW.WRONG_DATA)
    existing = card.image.capp.get(sfi, {})
    if record_id not in existing and len(existing) >= CAPP_RECORDS_PER_FILE:
        raise ApduError(SW.OUT_OF_RANGE)
    return record

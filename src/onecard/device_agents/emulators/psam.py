"""Emulated PSAM (terminal SAM) for offline purchases (epurse.md §8).

Owns the PSAM files (0015 serial, 0016 terminal number, 0017 issuer data, 0019 terminal
transaction serial), the persisted and strictly increasing TTS, purchase MAC1 with one to three
diversification levels (`80 70`), MAC2 verification (`80 72`) and the generic crypto pair
`80 1A` / `80 FA` used to recompute a TAC. Like the card, `Psam.process_apdu` always answers a
status word and never raises.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from onecard.device_agents.emulators.apdu import (
    SW,
    ApduError,
    Command,
    ok,
    parse_command,
    require_length,
    require_p1p2,
)
from onecard.device_agents.emulators.store import JsonStore
from onecard.keys import algorithms as alg
from onecard.keys import macdata
from onecard.keys.algorithms import Algorithm

ATR = bytes.fromhex("3B6A00008131FE450031C0640000000000")
PSAM_DF_FID = b"\x10\x01"
PSAM_AID = bytes.fromhex("A00000000386980701")
# `80 1A` P1 key usage → master key name [A: usage codes are COS-specific, §8.4].
KEY_USAGES = {0x44: "DTK", 0x28: "DAMK", 0x45: "DACK", 0x26: "DPK"}
_PURCHASE_TYPES = (macdata.TYPE_PURCHASE, macdata.TYPE_CAPP_PURCHASE)


@dataclass(frozen=True, slots=True)
class PsamImage:
    """Durable PSAM state. ``keys`` maps (algorithm, key name, key version) → master key."""

    serial: bytes
    terminal: bytes
    tts: int
    keys: Mapping[tuple[Algorithm, str, int], bytes] = field(repr=False)
    issuer_id: bytes = bytes(8)
    version: int = 0x01

    def ef15(self) -> bytes:
        """0015: serial(10) version(1) key-card type(1) issuer FCI(2)."""
        return self.serial + bytes((self.version, 0x01)) + bytes(2)

    def ef17(self) -> bytes:
        """0017: key index(1) issuer id(8) acceptor id(8) start(4) expiry(4)."""
        dates = bytes.fromhex("2024010120341231")
        return b"\x01" + self.issuer_id + self.terminal.rjust(8, b"\x00") + dates


@dataclass(frozen=True, slots=True)
class _Mac1Session:
    session_key: bytes = field(repr=False)
    alg: Algorithm
    amount: int


@dataclass
class _PsamSession:
    in_df: bool = False
    mac1: _Mac1Session | None = None
    crypto_key: bytes | None = None
    crypto_alg: Algorithm = Algorithm.TDES
    chain: bytes | None = None


class Psam:
    """PSAM emulator over a `PsamImage`; TTS changes are committed to ``store`` first."""

    atr = ATR

    def __init__(self, image: PsamImage, *, store: JsonStore | None = None) -> None:
        self._image = image
        self._store = store or JsonStore(None)
        self.session = _PsamSession()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Psam:
        store = JsonStore(path)
        return cls(psam_from_json(store.load()), store=store)

    @property
    def image(self) -> PsamImage:
        return self._image

    def save(self) -> None:
        self._store.save(psam_to_json(self._image))

    def power_off(self) -> None:
        self.session = _PsamSession()

    def process_apdu(self, apdu: bytes) -> bytes:
        """Answer one command APDU with data ‖ SW; never raises."""
        try:
            cmd = parse_command(bytes(apdu))
            handler = _HANDLERS.get((cmd.cla, cmd.ins))
            if handler is None:
                known = any(cla == cmd.cla for cla, _ in _HANDLERS)
                raise ApduError(SW.INS_NOT_SUPPORTED if known else SW.CLA_NOT_SUPPORTED)
            return handler(self, cmd)
        except ApduError as err:
            return err.sw
        except Exception:  # a bug must not crash the reader loop
            return SW.UNKNOWN_ERROR.bytes()

    # -- files -------------------------------------------------------------------------------
    def _select(self, cmd: Command) -> bytes:
        if cmd.p1 == 0x04 and cmd.data == PSAM_AID:
            self.session.in_df = True
        elif cmd.p1 == 0x00 and cmd.data in (b"\x3f\x00", PSAM_DF_FID):
            self.session.in_df = cmd.data == PSAM_DF_FID
        elif cmd.p1 in (0x00, 0x04):
            raise ApduError(SW.FILE_NOT_FOUND)
        else:
            raise ApduError(SW.WRONG_P1P2)
        self.session.mac1 = None
        return ok()

    def _read_binary(self, cmd: Command) -> bytes:
        if cmd.data or not cmd.p1 & 0x80:
            raise ApduError(SW.WRONG_LENGTH if cmd.data else SW.COMMAND_NOT_ALLOWED)
        files = {0x15: self._image.ef15(), 0x16: self._image.terminal, 0x17: self._image.ef17()}
        if self.session.in_df:
            files = {0x19: self._image.tts.to_bytes(4, "big")}
        content = files.get(cmd.p1 & 0x1F)
        if content is None:
            raise ApduError(SW.FILE_NOT_FOUND)
        if cmd.p2 > len(content):
            raise ApduError(SW.WRONG_OFFSET)
        size = len(content) - cmd.p2 if cmd.le in (None, 256) else cmd.le
        return ok(content[cmd.p2 : cmd.p2 + size])

    # -- purchase MAC1 / MAC2 ----------------------------------------------------------------
    def _mac1(self, cmd: Command) -> bytes:
        """`80 70 00 00 Lc rnd ctr amount type date time keyVer algId ASN [factors]` → TTS‖MAC1."""
        self.session.mac1 = None
        require_p1p2(cmd, 0, 0)
        require_length(cmd, 0x1C, 0x24, 0x2C)
        d = cmd.data
        rnd, counter, amount, ttype = d[0:4], d[4:6], int.from_bytes(d[6:10], "big"), d[10]
        date, time, version, alg_id = d[11:15], d[15:18], d[18], d[19]
        if ttype not in _PURCHASE_TYPES:
            raise ApduError(SW.DATA_INVALID)
        algorithm, master = self._master("DPK", version, alg_id)
        factors = [d[i : i + 8] for i in range(20, len(d), 8)]  # card first (§8.2)
        dpk = alg.diversify_path(algorithm, master, factors[::-1])
        tts = self._image.tts
        if tts >= 0xFFFFFFFF:
            raise ApduError(SW.OUT_OF_RANGE)
        sk = alg.purchase_session_key(algorithm, dpk, rnd, counter, tts)
        mac_data = macdata.purchase_mac1_data(amount, self._image.terminal, date, time, ttype)
        mac1 = alg.mac(algorithm, sk, mac_data)
        self._commit(replace(self._image, tts=tts + 1))  # TTS persists before it is used
        self.session.mac1 = _Mac1Session(sk, algorithm, amount)
        return ok(tts.to_bytes(4, "big") + mac1)

    def _master(self, name: str, version: int, alg_id: int) -> tuple[Algorithm, bytes]:
        try:
            algorithm = Algorithm.from_alg_id(alg_id)
        except ValueError as err:
            raise ApduError(SW.DATA_INVALID) from err
        master = self._image.keys.get((algorithm, name, version))
        if master is None:
            raise ApduError(SW.KEY_NOT_FOUND)
        return algorithm, master

    def _verify_mac2(self, cmd: Command) -> bytes:
        """`80 72 00 00 04 MAC2`: 90 00 if it matches the last `80 70` session, else 93 02."""
        session, self.session.mac1 = self.session.mac1, None
        require_p1p2(cmd, 0, 0)
        require_length(cmd, 4)
        if session is None:
            raise ApduError(SW.CONDITIONS_NOT_SATISFIED)
        expected = alg.mac(session.alg, session.session_key, macdata.purchase_mac2_data(
            session.amount))  # fmt: skip
        if not hmac.compare_digest(expected, cmd.data):
            raise ApduError(SW.MAC_INVALID)
        return ok()

    # -- generic crypto ----------------------------------------------------------------------
    def _crypto_init(self, cmd: Command) -> bytes:
        """`80 1A usage keyVer Lc factors(8·n, card first) [algId]` — derive the working key.

        The optional trailing algorithm byte is our extension [D]; without it 3DES is used. For
        the TAC usage (44) a 3DES key is folded L8 XOR R8 (§2.7), so `80 FA 05` yields the TAC.
        """
        self.session.crypto_key = self.session.chain = None
        name = KEY_USAGES.get(cmd.p1)
        if name is None:
            raise ApduError(SW.WRONG_P1P2)
        n_factors, has_alg = divmod(len(cmd.data), 8)
        if n_factors not in (1, 2, 3) or has_alg not in (0, 1):
            raise ApduError(SW.WRONG_LENGTH)
        alg_id = cmd.data[-1] if has_alg else 0x00
        algorithm, master = self._master(name, cmd.p2, alg_id)
        factors = [cmd.data[i : i + 8] for i in range(0, n_factors * 8, 8)]
        key = alg.diversify_path(algorithm, master, factors[::-1])
        self.session.crypto_key = alg.tac_key(algorithm, key) if name == "DTK" else key
        self.session.crypto_alg = algorithm
        return ok()

    def _crypto(self, cmd: Command) -> bytes:
        """`80 FA P1 00 Lc data`: 00 encrypt; 05 MAC (IV first); 07 first / 03 middle / 01 last."""
        key, algorithm = self.session.crypto_key, self.session.crypto_alg
        if key is None:
            raise ApduError(SW.CONDITIONS_NOT_SATISFIED)
        if cmd.p2 != 0 or cmd.p1 not in (0x00, 0x01, 0x03, 0x05, 0x07):
            raise ApduError(SW.WRONG_P1P2)
        if cmd.p1 == 0x00:
            if len(cmd.data) % algorithm.block_size:
                raise ApduError(SW.WRONG_LENGTH)
            return ok(alg.ecb_encrypt(algorithm, key, cmd.data))
        return self._crypto_mac(cmd, key, algorithm)

    def _crypto_mac(self, cmd: Command, key: bytes, algorithm: Algorithm) -> bytes:
        block = algorithm.block_size
        if cmd.p1 in (0x05, 0x07):
            if len(cmd.data) < block:
                raise ApduError(SW.WRONG_LENGTH)
            self.session.chain = cmd.data
        elif self.session.chain is None:
            raise ApduError(SW.CONDITIONS_NOT_SATISFIED)
        else:
            self.session.chain += cmd.data
        if cmd.p1 in (0x07, 0x03):
            return ok()
        data, self.session.chain = self.session.chain, None
        return ok(alg.mac(algorithm, key, data[block:], data[:block]))

    def _commit(self, image: PsamImage) -> None:
        self._store.save(psam_to_json(image))
        self._image = image


def psam_to_json(image: PsamImage) -> dict[str, Any]:
    """JSON form of a PSAM image (clear development keys)."""
    return {
        "format": "onecard-psam/1",
        "serial": image.serial.hex(),
        "terminal": image.terminal.hex(),
        "tts": image.tts,
        "issuer_id": image.issuer_id.hex(),
        "version": image.version,
        "keys": [
            {"alg": a.value, "name": n, "version": v, "key": k.hex()}
            for (a, n, v), k in image.keys.items()
        ],
    }


def psam_from_json(doc: Mapping[str, Any]) -> PsamImage:
    """Inverse of `psam_to_json`."""
    keys = {(Algorithm(k["alg"]), k["name"], int(k["version"])): bytes.fromhex(k["key"])
            for k in doc["keys"]}  # fmt: skip
    return PsamImage(
        serial=bytes.fromhex(doc["serial"]),
        terminal=bytes.fromhex(doc["terminal"]),
        tts=int(doc["tts"]),
        keys=keys,
        issuer_id=bytes.fromhex(doc["issuer_id"]),
        version=int(doc["version"]),
    )


def psam_image(
    masters: Mapping[Algorithm, Mapping[str, bytes]],
    *,
    terminal: bytes,
    tts: int = 1,
    key_version: int = 1,
    serial: bytes | None = None,
) -> PsamImage:
    """A PSAM holding the given master keys (both algorithms) under one key version."""
    if len(terminal) != 6:
        raise ValueError("terminal number must be 6 bytes")
    keys = {(a, name, key_version): k for a, named in masters.items() for name, k in named.items()}
    return PsamImage(serial=serial or bytes(4) + terminal, terminal=terminal, tts=tts, keys=keys)


_HANDLERS = {
    (0x00, 0xA4): Psam._select,
    (0x00, 0xB0): Psam._read_binary,
    (0x80, 0x70): Psam._mac1,
    (0x80, 0x72): Psam._verify_mac2,
    (0x80, 0x1A): Psam._crypto_init,
    (0x80, 0xFA): Psam._crypto,
}

"""Pure card cryptography for the PBOC-style purse (spec: shared/specs/epurse.md §2, §11).

No I/O, no key store, no clock: bytes in, bytes out. Everything goes through ``cryptography``;
3DES always gets a 24-byte key (K1‖K2‖K1, or K‖K‖K for single DES) so it never warns, and ECB
contexts are cached per key in a small per-thread LRU because building a context costs ~10
block operations.

Public API (stable; the card/PSAM emulators import it):

* ``Algorithm`` — StrEnum ``"3des"`` / ``"sm4"`` with ``block_size``, ``alg_id`` and
  ``Algorithm.from_alg_id(byte)``.
* Block ciphers (ECB, data a multiple of the block size):
  ``des_ecb_encrypt(key8, data)`` / ``des_ecb_decrypt``,
  ``tdes_ecb_encrypt(key16_or_24, data)`` / ``tdes_ecb_decrypt``,
  ``sm4_ecb_encrypt(key16, data)`` / ``sm4_ecb_decrypt``,
  ``ecb_encrypt(alg, key, data)`` / ``ecb_decrypt`` (dispatch; a 3DES key of 8 bytes is single DES).
* Helpers: ``pad80(data, block)``, ``xor_bytes(a, b)``, ``invert(data)``.
* MACs (4-byte result unless ``out_len`` says otherwise):
  ``pboc_mac(key8, data, iv=0⁸)`` (§2.2), ``retail_mac(key16, data, iv=0⁸)`` (§2.3),
  ``sm4_mac(key16, data, iv=0¹⁶)`` (§2.4), ``mac(alg, key, data, iv=None)`` (card MAC dispatch:
  3DES 8-byte key → pboc_mac, 3DES 16-byte key → retail_mac, SM4 → sm4_mac),
  ``mac_many(alg, key, messages)`` (several card MACs under one single-use key, uncached).
* Keys: ``diversify(alg, master16, factor8)`` (§2.5 one level),
  ``diversify_path(alg, master16, factors)`` (highest level first, card last),
  ``diversify_many(alg, master16, factors)`` (one level, many cards, one cipher call),
  ``load_session_key(alg, dlk_card, rnd4, online_counter)``,
  ``purchase_session_key(alg, dpk_card, rnd4, offline_counter, terminal_serial)``,
  ``session_key(alg, card_key, seed8)`` (§2.6), ``tac_key(alg, dtk_card)`` (§2.7),
  ``kcv(alg, key)`` (3-byte key check value: leftmost 3 bytes of E_K(0…0)),
  ``m1_sector_key(alg, m1_master, uid, app_code, sector, key_type)`` (§11, platform design).

The exact MACed byte strings (§6) are built by ``onecard.keys.macdata``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Final

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, modes
from cryptography.hazmat.primitives.ciphers.algorithms import SM4

from onecard.keys.errors import InvalidInput, InvalidKeyLength

__all__ = [
    "M1_KEY_A",
    "M1_KEY_B",
    "Algorithm",
    "des_ecb_decrypt",
    "des_ecb_encrypt",
    "diversify",
    "diversify_many",
    "diversify_path",
    "ecb_decrypt",
    "ecb_encrypt",
    "invert",
    "kcv",
    "load_session_key",
    "m1_sector_key",
    "mac",
    "mac_many",
    "pad80",
    "pboc_mac",
    "purchase_session_key",
    "retail_mac",
    "session_key",
    "sm4_ecb_decrypt",
    "sm4_ecb_encrypt",
    "sm4_mac",
    "tac_key",
    "tdes_ecb_decrypt",
    "tdes_ecb_encrypt",
    "xor_bytes",
]

M1_KEY_A: Final = 0x0A
M1_KEY_B: Final = 0x0B
_LOAD_SEED_TAIL: Final = b"\x80\x00"
_CACHE_SIZE: Final = 512
_INVERT: Final = bytes(255 - b for b in range(256))
_CBC_ZERO8: Final = modes.CBC(bytes(8))
_CBC_ZERO16: Final = modes.CBC(bytes(16))


class Algorithm(StrEnum):
    """Card key algorithm. Keys are 16 bytes for both; 3DES session/TAC keys are 8 bytes."""

    TDES = "3des"
    SM4 = "sm4"

    @property
    def block_size(self) -> int:
        """Cipher block size in bytes (8 for 3DES, 16 for SM4)."""
        return 8 if self is Algorithm.TDES else 16

    @property
    def alg_id(self) -> int:
        """Default algorithm identifier returned by INITIALIZE (§3.1: 00 = 3DES, 04 = SM4)."""
        return 0x00 if self is Algorithm.TDES else 0x04

    @classmethod
    def from_alg_id(cls, alg_id: int) -> Algorithm:
        """Map an INITIALIZE algorithm byte to an algorithm; ``01`` is 3DES on some COSes (§3.1)."""
        if alg_id in (0x00, 0x01):
            return cls.TDES
        if alg_id == 0x04:
            return cls.SM4
        raise InvalidInput(f"unknown algorithm identifier {alg_id:#04x}")


# --------------------------------------------------------------------------------------------
# Cached ECB contexts
# --------------------------------------------------------------------------------------------
class _Contexts:
    """ECB contexts for one key, reusable across calls; the decryptor is built on first use."""

    __slots__ = ("_cipher", "_dec", "enc")

    def __init__(self, cipher: Cipher[Any]) -> None:
        self._cipher = cipher
        self.enc = cipher.encryptor()
        self._dec: CipherContext | None = None

    @property
    def dec(self) -> CipherContext:
        """The decryptor (most keys only ever encrypt, so building it eagerly wastes time)."""
        if self._dec is None:
            self._dec = self._cipher.decryptor()
        return self._dec

    def __repr__(self) -> str:  # never show key material
        return "<ecb contexts>"


class _ContextCache(threading.local):
    """Per-thread LRU of ECB contexts: a context is not safe to share between threads."""

    def __init__(self) -> None:
        self.tdes: OrderedDict[bytes, _Contexts] = OrderedDict()
        self.sm4: OrderedDict[bytes, _Contexts] = OrderedDict()


_cache = _ContextCache()


def _lookup(table: OrderedDict[bytes, _Contexts], key: bytes, make: Any) -> _Contexts:
    ctx = table.get(key)
    if ctx is None:
        ctx = _Contexts(Cipher(make(key), modes.ECB()))  # noqa: S305 - card crypto is ECB by spec
        table[key] = ctx
        if len(table) > _CACHE_SIZE:
            table.popitem(last=False)
    else:
        table.move_to_end(key)
    return ctx


def _tdes_key24(key: bytes) -> bytes:
    """Expand 8 → K‖K‖K (single DES) and 16 → K1‖K2‖K1 so TripleDES never sees a short key."""
    n = len(key)
    if n == 8:
        return key * 3
    if n == 16:
        return key + key[:8]
    if n == 24:
        return key
    raise InvalidKeyLength(f"3DES/DES key must be 8, 16 or 24 bytes, got {n}")


def _tdes(key: bytes) -> _Contexts:
    return _lookup(_cache.tdes, _tdes_key24(key), TripleDES)


def _sm4_key(key: bytes) -> bytes:
    if len(key) != 16:
        raise InvalidKeyLength(f"SM4 key must be 16 bytes, got {len(key)}")
    return key


def _sm4(key: bytes) -> _Contexts:
    return _lookup(_cache.sm4, _sm4_key(key), SM4)


def _blocks(data: bytes, block: int) -> bytes:
    if len(data) % block:
        raise InvalidInput(f"data length {len(data)} is not a multiple of {block}")
    return data


# --------------------------------------------------------------------------------------------
# Block ciphers
# --------------------------------------------------------------------------------------------
def des_ecb_encrypt(key8: bytes, data: bytes) -> bytes:
    """Single-DES ECB encrypt (as 3DES K‖K‖K). ``key8`` 8 bytes, data a multiple of 8."""
    if len(key8) != 8:
        raise InvalidKeyLength(f"DES key must be 8 bytes, got {len(key8)}")
    return _tdes(key8).enc.update(_blocks(data, 8))


def des_ecb_decrypt(key8: bytes, data: bytes) -> bytes:
    """Single-DES ECB decrypt; inverse of `des_ecb_encrypt`."""
    if len(key8) != 8:
        raise InvalidKeyLength(f"DES key must be 8 bytes, got {len(key8)}")
    return _tdes(key8).dec.update(_blocks(data, 8))


def tdes_ecb_encrypt(key16: bytes, data: bytes) -> bytes:
    """3DES-EDE ECB encrypt with a 16-byte (K1‖K2‖K1) or 24-byte key; data a multiple of 8."""
    if len(key16) not in (16, 24):
        raise InvalidKeyLength(f"3DES key must be 16 or 24 bytes, got {len(key16)}")
    return _tdes(key16).enc.update(_blocks(data, 8))


def tdes_ecb_decrypt(key16: bytes, data: bytes) -> bytes:
    """3DES-EDE ECB decrypt; inverse of `tdes_ecb_encrypt`."""
    if len(key16) not in (16, 24):
        raise InvalidKeyLength(f"3DES key must be 16 or 24 bytes, got {len(key16)}")
    return _tdes(key16).dec.update(_blocks(data, 8))


def sm4_ecb_encrypt(key16: bytes, data: bytes) -> bytes:
    """SM4 ECB encrypt with a 16-byte key; data a multiple of 16."""
    return _sm4(key16).enc.update(_blocks(data, 16))


def sm4_ecb_decrypt(key16: bytes, data: bytes) -> bytes:
    """SM4 ECB decrypt; inverse of `sm4_ecb_encrypt`."""
    return _sm4(key16).dec.update(_blocks(data, 16))


def ecb_encrypt(alg: Algorithm, key: bytes, data: bytes) -> bytes:
    """ECB encrypt under ``alg``; a 3DES key of 8 bytes means single DES."""
    if alg is Algorithm.SM4:
        return sm4_ecb_encrypt(key, data)
    return _tdes(key).enc.update(_blocks(data, 8))


def ecb_decrypt(alg: Algorithm, key: bytes, data: bytes) -> bytes:
    """ECB decrypt under ``alg``; a 3DES key of 8 bytes means single DES."""
    if alg is Algorithm.SM4:
        return sm4_ecb_decrypt(key, data)
    return _tdes(key).dec.update(_blocks(data, 8))


# --------------------------------------------------------------------------------------------
# Byte helpers
# --------------------------------------------------------------------------------------------
def xor_bytes(a: bytes, b: bytes) -> bytes:
    """Bytewise XOR of two equal-length strings."""
    if len(a) != len(b):
        raise InvalidInput(f"xor of {len(a)} and {len(b)} bytes")
    n = len(a)
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(n, "big")


def invert(data: bytes) -> bytes:
    """Bitwise NOT of every byte (取反, written ~F in the spec)."""
    return data.translate(_INVERT)


def pad80(data: bytes, block: int) -> bytes:
    """ISO 9797-1 method 2: append 0x80 then 0x00 to a multiple of ``block``.

    Always pads: data already a multiple gets a whole extra ``80 00…`` block (§2.1).
    """
    n = len(data) + 1
    return data + b"\x80" + bytes(-n % block)


# --------------------------------------------------------------------------------------------
# MACs
# --------------------------------------------------------------------------------------------
def _cbc_last(ctx: _Contexts, padded: bytes, iv: bytes, block: int) -> bytes:
    """Last CBC block of ``padded`` under a cached ECB context (chaining done here)."""
    c = int.from_bytes(iv, "big")
    enc = ctx.enc.update
    for i in range(0, len(padded), block):
        chunk = (c ^ int.from_bytes(padded[i : i + block], "big")).to_bytes(block, "big")
        c = int.from_bytes(enc(chunk), "big")
    return c.to_bytes(block, "big")


def _check_iv(iv: bytes, block: int) -> None:
    if len(iv) != block:
        raise InvalidInput(f"IV must be {block} bytes, got {len(iv)}")


def pboc_mac(key: bytes, data: bytes, iv: bytes = bytes(8), out_len: int = 4) -> bytes:
    """PBOC MAC with a single-length key (§2.2): single-DES CBC over ``pad80(data, 8)``.

    ``key`` 8 bytes, ``iv`` 8 bytes (zero for MAC1/MAC2/TAC). Returns the leftmost
    ``out_len`` bytes of the last block.
    """
    if len(key) != 8:
        raise InvalidKeyLength(f"PBOC MAC key must be 8 bytes, got {len(key)}")
    _check_iv(iv, 8)
    return _cbc_last(_tdes(key), pad80(data, 8), iv, 8)[:out_len]


def retail_mac(key16: bytes, data: bytes, iv: bytes = bytes(8), out_len: int = 4) -> bytes:
    """ISO 9797-1 MAC algorithm 3 (§2.3): DES-CBC with L8(K), then D_R8(K), E_L8(K).

    Used for secure messaging (04 D6 / 04 DC / 84 xx) with a 16-byte key.
    """
    if len(key16) != 16:
        raise InvalidKeyLength(f"retail MAC key must be 16 bytes, got {len(key16)}")
    _check_iv(iv, 8)
    left, right = key16[:8], key16[8:]
    last = _cbc_last(_tdes(left), pad80(data, 8), iv, 8)
    return _tdes(left).enc.update(_tdes(right).dec.update(last))[:out_len]


def sm4_mac(key16: bytes, data: bytes, iv: bytes = bytes(16), out_len: int = 4) -> bytes:
    """SM4 CBC-MAC (§2.4): ``pad80(data, 16)``, IV 16 zero bytes, leftmost 4 bytes."""
    _check_iv(iv, 16)
    return _cbc_last(_sm4(key16), pad80(data, 16), iv, 16)[:out_len]


def mac(alg: Algorithm, key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    """Card MAC (4 bytes) per the key's algorithm and length.

    3DES with an 8-byte (session or TAC) key → `pboc_mac`; 3DES with a 16-byte key →
    `retail_mac`; SM4 (16-byte key) → `sm4_mac`. ``iv`` defaults to zeros of the block size.
    """
    if alg is Algorithm.SM4:
        return sm4_mac(key, data, bytes(16) if iv is None else iv)
    if len(key) == 16:
        return retail_mac(key, data, bytes(8) if iv is None else iv)
    return pboc_mac(key, data, bytes(8) if iv is None else iv)


def mac_many(alg: Algorithm, key: bytes, messages: Sequence[bytes]) -> list[bytes]:
    """Card MACs (4 bytes, zero IV) of several messages under one single-use key.

    Same results as `mac` with an 8-byte 3DES key or a 16-byte SM4 key, but it builds one CBC
    context for all messages and keeps nothing in the cache: the hot path for TAC checks of
    many records of one card, where the per-card key would only pollute the LRU.
    """
    if alg is Algorithm.SM4:
        cipher: Cipher[Any] = Cipher(SM4(_sm4_key(key)), _CBC_ZERO16)
        block = 16
    elif len(key) == 8:
        cipher = Cipher(TripleDES(key * 3), _CBC_ZERO8)
        block = 8
    else:
        raise InvalidKeyLength(f"mac_many needs an 8-byte 3DES key, got {len(key)}")
    update = cipher.encryptor().update
    if len(messages) == 1:  # the common case: no chaining to undo
        return [update(pad80(messages[0], block))[-block:][:4]]
    out: list[bytes] = []
    chain = 0  # CBC carries the previous last block into the next message: cancel it by XOR
    for message in messages:
        padded = pad80(message, block)
        head = (int.from_bytes(padded[:block], "big") ^ chain).to_bytes(block, "big")
        last = update(head + padded[block:])[-block:]
        chain = int.from_bytes(last, "big")
        out.append(last[:4])
    return out


# --------------------------------------------------------------------------------------------
# Diversification, session keys, TAC key, KCV
# --------------------------------------------------------------------------------------------
def _check_master(key: bytes) -> None:
    if len(key) != 16:
        raise InvalidKeyLength(f"master/card key must be 16 bytes, got {len(key)}")


def _check_factor(factor: bytes) -> None:
    if len(factor) != 8:
        raise InvalidInput(f"diversification factor must be 8 bytes, got {len(factor)}")


def _div_input(factors: Sequence[bytes]) -> bytes:
    # 3DES: E(F) and E(~F) are two separate blocks; SM4: F‖~F is one block. Either way the
    # cipher input for a factor is F‖~F, so many factors become one ECB call.
    for f in factors:
        _check_factor(f)
    return b"".join(f + invert(f) for f in factors)


def diversify(alg: Algorithm, master: bytes, factor: bytes) -> bytes:
    """One level of 密钥分散 (§2.5). 3DES: E(F)‖E(~F); SM4: E(F‖~F). 16 bytes out."""
    _check_master(master)
    return ecb_encrypt(alg, master, _div_input((factor,)))


def diversify_path(alg: Algorithm, master: bytes, factors: Sequence[bytes]) -> bytes:
    """Multi-level diversification: factors highest level first, card (ASN) last (§2.5).

    An empty ``factors`` returns ``master`` unchanged (zero levels).
    """
    key = master
    _check_master(key)
    for factor in factors:
        key = diversify(alg, key, factor)
    return key


def diversify_many(alg: Algorithm, master: bytes, factors: Sequence[bytes]) -> list[bytes]:
    """One diversification level for many factors with a single cipher call (batch clearing)."""
    _check_master(master)
    out = ecb_encrypt(alg, master, _div_input(factors))
    return [out[i : i + 16] for i in range(0, len(out), 16)]


def _u16(value: int | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        if len(value) != 2:
            raise InvalidInput(f"{what} must be 2 bytes, got {len(value)}")
        return value
    if not 0 <= value <= 0xFFFF:
        raise InvalidInput(f"{what} {value} out of range 0..65535")
    return value.to_bytes(2, "big")


def _rnd4(rnd: bytes) -> bytes:
    if len(rnd) != 4:
        raise InvalidInput(f"card random must be 4 bytes, got {len(rnd)}")
    return rnd


def session_key(alg: Algorithm, card_key: bytes, seed: bytes) -> bytes:
    """Process key (§2.6). 3DES: E_K(seed) → 8 bytes; SM4: E_K(seed‖~seed) → 16 bytes."""
    _check_master(card_key)
    if len(seed) != 8:
        raise InvalidInput(f"session key seed must be 8 bytes, got {len(seed)}")
    data = seed if alg is Algorithm.TDES else seed + invert(seed)
    return ecb_encrypt(alg, card_key, data)


def load_session_key(
    alg: Algorithm, dlk_card: bytes, rnd: bytes, online_counter: int | bytes
) -> bytes:
    """Load session key: seed = rnd(4) ‖ online counter(2) ‖ 80 00 (§2.6).

    ``online_counter`` is the value INITIALIZE FOR LOAD returned (before the card increments it),
    as an int or 2 big-endian bytes.
    """
    seed = _rnd4(rnd) + _u16(online_counter, "online counter") + _LOAD_SEED_TAIL
    return session_key(alg, dlk_card, seed)


def purchase_session_key(
    alg: Algorithm,
    dpk_card: bytes,
    rnd: bytes,
    offline_counter: int | bytes,
    terminal_serial: int | bytes,
) -> bytes:
    """Purchase session key: seed = rnd(4) ‖ offline counter(2) ‖ TTS low 2 bytes (§2.6).

    ``terminal_serial`` is the PSAM's terminal transaction serial: an int (its low 16 bits are
    used), its 4-byte form (last 2 bytes used) or the low 2 bytes themselves.
    """
    if isinstance(terminal_serial, int):
        low = (terminal_serial & 0xFFFF).to_bytes(2, "big")
    elif len(terminal_serial) == 4:
        low = terminal_serial[2:]
    else:
        low = _u16(terminal_serial, "terminal serial")
    seed = _rnd4(rnd) + _u16(offline_counter, "offline counter") + low
    return session_key(alg, dpk_card, seed)


def tac_key(alg: Algorithm, dtk_card: bytes) -> bytes:
    """TAC key (§2.7). 3DES: L8(DTK) XOR R8(DTK) (8 bytes); SM4: DTK itself (16 bytes)."""
    _check_master(dtk_card)
    if alg is Algorithm.SM4:
        return dtk_card
    folded = int.from_bytes(dtk_card[:8], "big") ^ int.from_bytes(dtk_card[8:], "big")
    return folded.to_bytes(8, "big")


def kcv(alg: Algorithm, key: bytes, length: int = 3) -> bytes:
    """Key check value: leftmost ``length`` bytes of E_K(zero block).

    Works for 8-byte (single DES), 16/24-byte 3DES and 16-byte SM4 keys.
    """
    return ecb_encrypt(alg, key, bytes(alg.block_size))[:length]


def m1_sector_key(
    alg: Algorithm, m1_master: bytes, uid: bytes, app_code: int, sector: int, key_type: int
) -> bytes:
    """MIFARE Classic sector key, platform design (§11, not a standard). 6 bytes out.

    blk = UID(first 4 bytes) ‖ app_code(2) ‖ sector(1) ‖ key_type(1) with key_type
    ``M1_KEY_A`` (0x0A) or ``M1_KEY_B`` (0x0B); 3DES: left6(E(blk)); SM4: left6(E(blk‖~blk)).
    """
    _check_master(m1_master)
    if len(uid) < 4:
        raise InvalidInput(f"UID must be at least 4 bytes, got {len(uid)}")
    if key_type not in (M1_KEY_A, M1_KEY_B) or not 0 <= sector <= 0xFF:
        raise InvalidInput("M1 key type must be 0x0A/0x0B and sector 0..255")
    blk = uid[:4] + _u16(app_code, "M1 application code") + bytes((sector, key_type))
    data = blk if alg is Algorithm.TDES else blk + invert(blk)
    return ecb_encrypt(alg, m1_master, data)[:6]

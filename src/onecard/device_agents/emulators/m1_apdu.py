"""PC/SC part-3 pseudo-APDUs for the emulated M1 card (what a contactless reader exposes).

Owns the byte layouts: `FF CA 00 00 00` UID; `FF 82 00 slot 06 key` load key; `FF 86 00 00 05
01 00 block 60|61 slot` authenticate; `FF B0 00 block 10` read; `FF D6 00 block 10 data` write;
ACS-style value commands `FF D7 00 block 05 op value(4, big-endian)` (op 00 store, 01 increment,
02 decrement — each transfers back into the same block), `FF D7 00 src 02 03 dst` restore into
another block, and `FF B1 00 block 04` read value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onecard.device_agents.emulators.apdu import SW, ApduError, Command, ok, parse_command
from onecard.device_agents.emulators.m1 import M1Error, value_block

if TYPE_CHECKING:
    from onecard.device_agents.emulators.m1 import M1Card


def dispatch(card: M1Card, apdu: bytes) -> bytes:
    cmd = parse_command(apdu)
    if cmd.cla != 0xFF:
        raise ApduError(SW.CLA_NOT_SUPPORTED)
    handler = _HANDLERS.get(cmd.ins)
    if handler is None:
        raise ApduError(SW.INS_NOT_SUPPORTED)
    return handler(card, cmd)


def _get_data(card: M1Card, cmd: Command) -> bytes:
    if (cmd.p1, cmd.p2) != (0, 0):
        raise ApduError(SW.WRONG_P1P2)
    return ok(card.uid)


def _load_key(card: M1Card, cmd: Command) -> bytes:
    if len(cmd.data) != 6:
        raise ApduError(SW.WRONG_LENGTH)
    card.load_key(cmd.p2, cmd.data)
    return ok()


def _authenticate(card: M1Card, cmd: Command) -> bytes:
    d = cmd.data
    if len(d) != 5 or d[0] != 0x01 or d[3] not in (0x60, 0x61):
        raise ApduError(SW.WRONG_DATA if len(d) == 5 else SW.WRONG_LENGTH)
    key_type = "A" if d[3] == 0x60 else "B"
    if not card.authenticate(d[2], key_type, card.slot_key(d[4])):
        raise M1Error("authentication failed")
    return ok()


def _read(card: M1Card, cmd: Command) -> bytes:
    return ok(card.read(cmd.p2)[: cmd.le or 16])


def _write(card: M1Card, cmd: Command) -> bytes:
    card.write(cmd.p2, cmd.data)
    return ok()


def _value(card: M1Card, cmd: Command) -> bytes:
    block, d = cmd.p2, cmd.data
    if len(d) == 2 and d[0] == 0x03:
        card.restore(block)
        card.transfer(d[1])
        return ok()
    if len(d) != 5 or d[0] not in (0, 1, 2):
        raise ApduError(SW.WRONG_DATA)
    amount = int.from_bytes(d[1:5], "big", signed=True)
    if d[0] == 0x00:
        card.write(block, value_block(amount, block))
        return ok()
    (card.increment if d[0] == 0x01 else card.decrement)(block, amount)
    card.transfer(block)
    return ok()


def _read_value(card: M1Card, cmd: Command) -> bytes:
    return ok(card.value(cmd.p2).to_bytes(4, "big", signed=True))


_HANDLERS = {
    0xCA: _get_data,
    0x82: _load_key,
    0x86: _authenticate,
    0xB0: _read,
    0xD6: _write,
    0xD7: _value,
    0xB1: _read_value,
}

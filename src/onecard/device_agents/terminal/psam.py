"""Terminal side of the PSAM: terminal number, purchase MAC1/MAC2 and TAC recomputation.

Owns the PSAM conversation of §7.2 steps 1, 4, 6 and §8.4 (`80 1A` + `80 FA`) on a
`CardChannel`. One `PsamSession` per terminal; it reads the terminal number once.
"""

from __future__ import annotations

from dataclasses import dataclass

from onecard.device_agents.terminal import apdus
from onecard.device_agents.terminal.apdus import InitPurchase
from onecard.device_agents.terminal.cardinfo import CardInfo
from onecard.device_agents.terminal.channel import CardChannel, Exchange

PSAM_DF = b"\x10\x01"
TAC_KEY_USAGE = 0x44


@dataclass(frozen=True, slots=True)
class Mac1:
    """PSAM answer to `80 70`: terminal transaction serial and MAC1."""

    tts: int
    mac1: bytes


class PsamSession:
    """An opened PSAM: terminal number read from EF 0016, application DF selected."""

    def __init__(self, channel: CardChannel) -> None:
        self.ex = Exchange(channel)
        self.terminal = self.ex.ok("psam read 0016", apdus.read_binary_sfi(0x16, 6), 6)
        self.ex.ok("psam select DF", apdus.select_fid(PSAM_DF))

    def mac1(self, card: CardInfo, init: InitPurchase, amount: int, ttype: int, when: bytes
             ) -> Mac1:  # fmt: skip
        """`80 70` with one or two factors depending on the card's issuer factor."""
        apdu = apdus.psam_mac1(init, amount, ttype, when, card.psam_factors())
        data = self.ex.ok("psam MAC1", apdu, 8)
        return Mac1(int.from_bytes(data[:4], "big"), data[4:])

    def verify_mac2(self, mac2: bytes) -> bool:
        """`80 72`: True when the PSAM accepts the card's MAC2."""
        return self.ex.send("psam MAC2", apdus.psam_verify_mac2(mac2)).sw == b"\x90\x00"

    def recompute_tac(self, card_factors: list[bytes], key_version: int, alg_id: int,
                      tac_data: bytes) -> bytes:  # fmt: skip
        """Recompute a TAC with `80 1A 44` (TAC key, factors card first) and `80 FA 05`."""
        init = bytes((0x80, 0x1A, TAC_KEY_USAGE, key_version))
        data = b"".join(card_factors) + bytes((alg_id,))
        self.ex.ok("psam crypto init", init + bytes((len(data),)) + data)
        block = 16 if alg_id == 0x04 else 8
        payload = bytes(block) + tac_data
        return self.ex.ok("psam MAC", bytes((0x80, 0xFA, 0x05, 0x00, len(payload))) + payload, 4)

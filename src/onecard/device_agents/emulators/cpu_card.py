"""Emulated PBOC-style CPU card (MOHURD, MOT and campus profiles; 3DES and SM4).

Owns the APDU front of the card: dispatch, selection and security state, ISO file commands,
power loss (tearing, epurse.md §14) and the commit of a new durable image. The purse commands
themselves live in `cpu_purse`. Contract: `CpuCard.process_apdu` answers every byte string with
data ‖ SW1 SW2 and never raises — except `CardTorn`, which only an armed tear produces and which
means "the card lost power and answered nothing".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from onecard.device_agents.emulators import cpu_files, cpu_purse
from onecard.device_agents.emulators.apdu import SW, ApduError, Command, parse_command
from onecard.device_agents.emulators.cpu_image import CardImage, image_from_json, image_to_json
from onecard.device_agents.emulators.cpu_session import Pending, Session
from onecard.device_agents.emulators.profiles import PROFILES, Profile
from onecard.device_agents.emulators.store import JsonStore

ATR = bytes.fromhex("3B951381018073FF01000B")
Handler = Callable[["CpuCard", Command], bytes]


class CardTorn(Exception):
    """Simulated power loss: the card committed or not (per the tear point) and said nothing."""


class TearPoint(Enum):
    """Where an armed tear cuts the power inside the matching command."""

    BEFORE_COMMIT = "before_commit"
    AFTER_COMMIT = "after_commit"


@dataclass
class _Tear:
    ins: int | None
    point: TearPoint
    skip: int


class CpuCard:
    """A CPU card emulator over a `CardImage`; commits go to ``store`` (atomic JSON file).

    ``rng(n)`` supplies the card's random numbers (INITIALIZE, GET CHALLENGE); tests pass a
    fixed source to reproduce the spec transcripts.
    """

    atr = ATR

    def __init__(
        self,
        image: CardImage,
        *,
        store: JsonStore | None = None,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._image = image
        self._store = store or JsonStore(None)
        self.rng = rng
        self.session = Session()
        self._tear: _Tear | None = None
        self._tearing: TearPoint | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kwargs: Callable[[int], bytes]) -> CpuCard:
        """Load a card from its persisted image file."""
        store = JsonStore(path)
        return cls(image_from_json(store.load()), store=store, **kwargs)

    @property
    def image(self) -> CardImage:
        return self._image

    @property
    def profile(self) -> Profile:
        return PROFILES[self._image.profile]

    @property
    def path(self) -> Path | None:
        return self._store.path

    def save(self) -> None:
        """Persist the current image (after personalisation)."""
        self._store.save(image_to_json(self._image))

    # -- power and tearing -------------------------------------------------------------------
    def power_off(self) -> None:
        """Drop all volatile state (field loss, reset, card removal)."""
        self.session = Session()
        self._tearing = None

    def arm_tear(
        self, *, ins: int | None = None, point: TearPoint = TearPoint.AFTER_COMMIT, skip: int = 0
    ) -> None:
        """Cut the power during the next command with INS ``ins`` (any command if None),
        after letting ``skip`` matching commands through."""
        self._tear = _Tear(ins, point, skip)

    def commit(self, image: CardImage) -> None:
        """Make ``image`` the durable state in one atomic step, honouring an armed tear."""
        if self._tearing is TearPoint.BEFORE_COMMIT:
            self._cut_power()
        self._store.save(image_to_json(image))
        self._image = image
        if self._tearing is TearPoint.AFTER_COMMIT:
            self._cut_power()

    def _cut_power(self) -> None:
        self.power_off()
        raise CardTorn

    def _arm_for(self, cmd: Command) -> None:
        tear = self._tear
        if tear is None or (tear.ins is not None and tear.ins != cmd.ins):
            return
        if tear.skip:
            tear.skip -= 1
            return
        self._tear, self._tearing = None, tear.point

    # -- APDU front --------------------------------------------------------------------------
    def process_apdu(self, apdu: bytes) -> bytes:
        """Answer one command APDU with data ‖ SW. Raises only CardTorn (armed tear)."""
        try:
            cmd = parse_command(bytes(apdu))
        except ApduError as err:
            return err.sw
        self._arm_for(cmd)
        try:
            response = self._dispatch(cmd)
        except ApduError as err:
            response = err.sw
        except CardTorn:
            raise
        except Exception:  # a bug must not crash the reader loop; the card answers 6F 00
            response = SW.UNKNOWN_ERROR.bytes()
        if self._tearing is not None:
            self._cut_power()
        return response

    def _dispatch(self, cmd: Command) -> bytes:
        handler = _HANDLERS.get((cmd.cla, cmd.ins))
        if handler is None:
            self._drop_pending()
            known_cla = any(cla == cmd.cla for cla, _ in _HANDLERS)
            raise ApduError(SW.INS_NOT_SUPPORTED if known_cla else SW.CLA_NOT_SUPPORTED)
        if not _keeps_pending(cmd):
            self._drop_pending()
        return handler(self, cmd)

    def _drop_pending(self) -> None:
        self.session.pending = None
        self.session.capp_cache.clear()

    def take_pending(self) -> Pending:
        """Consume the pending INITIALIZE (one CREDIT/DEBIT per INITIALIZE, success or not)."""
        pending = self.session.pending
        self._drop_pending()
        if pending is None:
            raise ApduError(SW.CONDITIONS_NOT_SATISFIED)
        return pending

    def require_adf(self) -> None:
        if not self.session.in_adf:
            raise ApduError(SW.CONDITIONS_NOT_SATISFIED)

    def update(self, **changes: object) -> None:
        """Commit a copy of the image with ``changes`` applied."""
        self.commit(replace(self._image, **changes))  # type: ignore[arg-type]


def _keeps_pending(cmd: Command) -> bool:
    # CREDIT/DEBIT consume the pending INITIALIZE themselves; 80 DC may sit inside a CAPP purchase.
    return cmd.cla == 0x80 and cmd.ins in (0x52, 0x54, 0xDC)


_HANDLERS: dict[tuple[int, int], Handler] = {
    (0x00, 0xA4): cpu_files.select,
    (0x00, 0xB0): cpu_files.read_binary,
    (0x00, 0xB2): cpu_files.read_record,
    (0x00, 0x84): cpu_files.get_challenge,
    (0x00, 0x20): cpu_files.verify_pin,
    (0x04, 0xD6): cpu_files.update_binary_sm,
    (0x04, 0xDC): cpu_files.update_record_sm,
    (0x80, 0x50): cpu_purse.initialize,
    (0x80, 0x52): cpu_purse.credit_for_load,
    (0x80, 0x54): cpu_purse.debit_for_purchase,
    (0x80, 0xDC): cpu_purse.update_capp_data_cache,
    (0x80, 0x5C): cpu_purse.get_balance,
    (0x80, 0x5A): cpu_purse.get_transaction_prove,
}

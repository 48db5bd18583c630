"""paho's MQTT v5 ``Properties`` with its constant tables built once per process.

paho-mqtt 2.x decodes every MQTT v5 PUBLISH, PUBACK, PUBREC, PUBREL and PUBCOMP it receives
into a fresh ``Properties`` object, and ``Properties.__init__`` builds, for each one, the
whole table of the 27 property names and identifiers, their types and the packet types each
may appear in (about sixty tuples, lists and dicts); ``unpack`` then clears the new object by
checking every one of the 27 names. For the bridge that was two such objects per tap (the
tap's PUBLISH, the PUBACK of its reply) and one per record batch: about 17 µs each, and in a
py-spy profile under 500 taps/s a tenth of the time the bridge held the GIL (the simulator
fleet pays the same per message for its 1,000 clients).

:class:`LeanProperties` shares one copy of those tables (paho only reads them) and skips the
clearing when a packet carries no properties at all (a property length of zero, the common
case); everything else is paho's own code. :func:`use_lean_properties` makes paho's decoder
and client build it.
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as paho_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

# The attributes paho's ``Properties`` keeps for itself (its ``__setattr__`` lets them by);
# every other instance attribute is a property the packet carried.
_TABLES = ("types", "names", "properties")
_OWN = frozenset({"packetType", *_TABLES})
_TEMPLATE = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
_PATCHED = (paho_packet, paho_client)  # the modules that construct ``Properties`` on receipt


class LeanProperties(Properties):
    """paho's ``Properties`` whose name, type and packet tables are one shared, read-only
    copy. Encodes, decodes, validates and prints exactly as paho's class does."""

    def __init__(self, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        for name in _TABLES:
            object.__setattr__(self, name, getattr(_TEMPLATE, name))

    def unpack(self, buffer: bytes | bytearray) -> tuple[Properties, int]:
        """As paho's ``unpack``; a property length of zero (one byte, ``0x00``) on an object
        that holds no property yet returns at once, with nothing to clear or read."""
        if buffer[:1] == b"\x00" and self.__dict__.keys() <= _OWN:
            return self, 1
        found: tuple[Properties, int] = super().unpack(buffer)  # type: ignore[no-untyped-call]
        return found


def use_lean_properties() -> bool:
    """Make paho (process-wide) build :class:`LeanProperties` where it builds ``Properties``.

    Idempotent. Returns whether paho uses them now: a paho release whose modules no longer
    name ``Properties`` keeps its own (it works as before; a test of this package fails, so
    the upgrade is noticed)."""
    done = True
    for module in _PATCHED:
        current: Any = getattr(module, "Properties", None)
        if current is LeanProperties:
            continue
        if current is not Properties:
            log.debug("paho's %s has no Properties of its own; keeping it", module.__name__)
            done = False
            continue
        module.__dict__["Properties"] = LeanProperties
    return done

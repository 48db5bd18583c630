"""A card's life in tests: the personalisation device, a terminal and its PSAM.

Reusable by any test (module authors' too) that issues CPU cards through the platform and then
loads, spends and clears them with the emulators: the transport key is assembled from exported
components the way a personalisation device would hold it, and unwraps the card package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import datetime

from onecard.device_agents.emulators.cpu_card import CpuCard
from onecard.device_agents.emulators.personalise import CardSpec, personalise
from onecard.device_agents.emulators.psam import Psam, psam_image
from onecard.device_agents.emulators.store import JsonStore
from onecard.device_agents.terminal.channel import InProcessChannel
from onecard.device_agents.terminal.psam import PsamSession
from onecard.device_agents.terminal.purchase import purchase
from onecard.keys import algorithms as alg
from onecard.keys.algorithms import Algorithm
from onecard.keys.softhsm import combine_components
from onecard.platform.actors import Actor
from onecard.platform.cards.keyring import CARD_CENTRE, PURSE, TRANSPORT

KEK = bytes(range(32))
TERMINAL = bytes.fromhex("112233445566")
PIN = bytes.fromhex("123456")
WHEN = datetime(2026, 9, 1, 12, 0, 0)


def ceremony_service(keyring, session, tenant_id, now):
    """A key service for the test's own ceremonies (exporting the transport key, PSAM image)."""
    return keyring.service(session, actor=Actor.system("ceremony"), now=now)


def transport_key(service, tenant_id):
    """The personalisation device's transport key, assembled from exported components."""
    info = service.versions(tenant_id=tenant_id, application=PURSE, key_name=TRANSPORT)[-1]
    parts = service.export_components(module=CARD_CENTRE, tenant_id=tenant_id,
                                      application=PURSE, key_name=TRANSPORT, version=1)  # fmt: skip
    return info.algorithm, combine_components(info.algorithm, parts)


def unwrapper(tk_alg, tk):
    """The unwrap function only a device holding the transport key has."""
    return lambda _name, blob: alg.ecb_decrypt(tk_alg, tk, blob)


def card_from_package(pkg: dict, unwrap) -> CpuCard:
    """An emulated card personalised from a package (JSON form) by the personalisation device."""
    algorithm = Algorithm(pkg["algorithm"])
    spec = CardSpec("campus", algorithm, bytes.fromhex(pkg["asn"]), None, balance=0, pin=PIN,
                    key_index=pkg["key_index"], key_version=pkg["key_version"])  # fmt: skip
    blobs = {k["name"]: bytes.fromhex(k["wrapped"]) for k in pkg["keys"]}
    image = personalise(spec, blobs, unwrap=unwrap)
    for k in pkg["keys"]:  # the device checks every unwrapped key against its KCV
        key = image.keys[k["name"]][pkg["key_index"]].key
        assert alg.kcv(algorithm, key).hex().upper() == k["kcv"]
    ef15 = bytes.fromhex(pkg["ef0015"])  # same layout as the emulator's, validity aside
    assert (image.ef15[:20], image.ef15[28:]) == (ef15[:20], ef15[28:])
    image = replace(image, ef15=ef15, ef16=bytes.fromhex(pkg["ef0016"]))
    return CpuCard(image, store=JsonStore(None))


def psam_for(service, tenant_id, unwrap, *, tts=0x100) -> PsamSession:
    """A PSAM loaded from the key service's wrapped PSAM image (purchase and TAC masters)."""
    wrapped = service.psam_image(module=CARD_CENTRE, tenant_id=tenant_id, application=PURSE,
                                 key_names=["DPK", "DTK"], key_version=1)  # fmt: skip
    algorithm = wrapped.keys[0].algorithm
    masters = {k.name: unwrap(k.name, k.ciphertext) for k in wrapped.keys}
    return PsamSession(InProcessChannel(Psam(psam_image({algorithm: masters}, terminal=TERMINAL,
                                                        tts=tts))))  # fmt: skip


def buy(card: CpuCard, psam: PsamSession, amount: int):
    """One offline purchase at the PSAM's terminal; returns the clearing record."""
    return purchase(InProcessChannel(card), psam, amount=amount, now=WHEN).record


def tampered(record):
    """The same record with one TAC bit flipped (checksum recomputed, as a forger would)."""
    return dataclasses.replace(record, tac=bytes([record.tac[0] ^ 1]) + record.tac[1:])

"""Software HSM: implements `onecard.keys.hsm.Hsm` over an encrypted key store file.

Master keys live in process memory and in the AES-256-GCM store (`onecard.keys.keystore`);
nothing leaves through this class except what the `Hsm` protocol allows. Issuer-level keys
(master diversified by all factors but the card's) are cached, so per-card work is one
diversification plus the MAC. Python cannot wipe memory: a production deployment that needs
that guarantee uses a hardware backend behind the same protocol.

One process owns a store file at a time (the lock below is per process).
"""

from __future__ import annotations

import hmac
import os
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

from onecard.keys import algorithms as alg
from onecard.keys import macdata
from onecard.keys.algorithms import Algorithm
from onecard.keys.errors import (
    InvalidInput,
    KcvMismatch,
    KeyExists,
    KeyNotFound,
    KeyStoreError,
    MacInvalid,
    OperationNotPermitted,
)
from onecard.keys.hsm import (
    MAX_LEVELS,
    KeyComponent,
    KeyInfo,
    KeyRef,
    KeyUsage,
    LoadRequest,
    PurchaseRequest,
    TacCheck,
    WrappedKey,
    WrappedKeySet,
    usage_of,
)
from onecard.keys.keystore import StoredKey, read_store, write_store

try:
    from onecard.keys import _tacbatch
except ImportError as _err:  # pragma: no cover - a broken install, not a runtime condition
    raise ImportError(
        "onecard.keys._tacbatch (the C TAC verifier) is not built: run `make install` "
        "(it needs gcc and libssl-dev; then `pip install -e .` compiles it)"
    ) from _err

KEY_BYTES: Final = 16
_ISSUER_CACHE_SIZE: Final = 4096
_CARD_WRAP_USAGES: Final = frozenset(
    {KeyUsage.LOAD, KeyUsage.PURCHASE, KeyUsage.TAC, KeyUsage.SECURE_MESSAGING}
)
_PSAM_USAGES: Final = frozenset({KeyUsage.PURCHASE, KeyUsage.TAC, KeyUsage.M1})


class SoftHsm:
    """`Hsm` backed by a key store file encrypted under a 32-byte KEK.

    ``create=True`` starts an empty store when the file does not exist; otherwise a missing
    file is a `KeyStoreError` and a modified one a `KeyStoreTampered`.
    """

    def __init__(self, path: str | os.PathLike[str], kek: bytes, *, create: bool = False) -> None:
        self._path = Path(path)
        self._kek = kek
        self._lock = threading.RLock()
        self._issuer: OrderedDict[tuple[KeyRef, tuple[bytes, ...]], bytes] = OrderedDict()
        if self._path.exists():
            self._keys = read_store(self._path, kek)
        elif create:
            self._keys = {}
            write_store(self._path, kek, self._keys)
        else:
            raise KeyStoreError(f"key store {self._path} does not exist")

    def __repr__(self) -> str:
        return f"SoftHsm({str(self._path)!r}, {len(self._keys)} keys)"

    # ---------------------------------------------------------------- internal helpers
    def _get(self, ref: KeyRef, *usages: KeyUsage) -> StoredKey:
        key = self._keys.get(ref)
        if key is None:
            raise KeyNotFound(f"no key {ref}")
        if not key.active:
            raise OperationNotPermitted(f"key {ref} is retired")
        if usages and usage_of(ref.name) not in usages:
            raise OperationNotPermitted(f"key {ref} may not be used for this operation")
        return key

    def _issuer_key(self, key: StoredKey, prefix: tuple[bytes, ...]) -> bytes:
        """Master diversified by ``prefix`` (all factors but the last), cached."""
        if not prefix:
            return key.secret
        slot = (key.ref, prefix)
        with self._lock:
            cached = self._issuer.get(slot)
            if cached is not None:
                self._issuer.move_to_end(slot)
                return cached
        derived = alg.diversify_path(key.algorithm, key.secret, prefix)
        with self._lock:
            self._issuer[slot] = derived
            if len(self._issuer) > _ISSUER_CACHE_SIZE:
                self._issuer.popitem(last=False)
        return derived

    def _card_key(self, key: StoredKey, factors: Sequence[bytes]) -> bytes:
        """The fully diversified card-level key; ``factors`` must match the key's levels."""
        factors = tuple(factors)
        if len(factors) != key.levels:
            raise InvalidInput(f"key {key.ref} needs {key.levels} factors, got {len(factors)}")
        if not factors:
            return key.secret
        issuer = self._issuer_key(key, factors[:-1])
        return alg.diversify(key.algorithm, issuer, factors[-1])

    def _partial_key(self, key: StoredKey, factors: Sequence[bytes]) -> bytes:
        if len(factors) > key.levels:
            raise InvalidInput(f"key {key.ref} has only {key.levels} levels")
        return self._issuer_key(key, tuple(factors))

    def _store(self, key: StoredKey) -> KeyInfo:
        with self._lock:
            if key.ref in self._keys:
                raise KeyExists(f"key {key.ref} already exists")
            keys = dict(self._keys)
            keys[key.ref] = key
            write_store(self._path, self._kek, keys)
            self._keys = keys
        return key.info()

    # ---------------------------------------------------------------- key management
    def list_keys(self, tenant_id: int | None = None) -> list[KeyInfo]:
        """Metadata of all keys (of one tenant), sorted by ref."""
        keys = sorted(self._keys.values(), key=lambda k: k.ref)
        return [k.info() for k in keys if tenant_id is None or k.ref.tenant_id == tenant_id]

    def key_info(self, ref: KeyRef) -> KeyInfo:
        """Metadata of one key (retired keys included)."""
        key = self._keys.get(ref)
        if key is None:
            raise KeyNotFound(f"no key {ref}")
        return key.info()

    def generate_key(
        self, ref: KeyRef, algorithm: Algorithm, levels: int, *, exportable: bool = True
    ) -> KeyInfo:
        """Create a random 16-byte key from the OS CSPRNG."""
        return self._store(_new_key(ref, algorithm, levels, os.urandom(KEY_BYTES), exportable))

    def import_components(
        self,
        ref: KeyRef,
        algorithm: Algorithm,
        levels: int,
        components: Sequence[KeyComponent],
        *,
        expected_kcv: bytes | None = None,
        exportable: bool = True,
    ) -> KeyInfo:
        """Assemble a key from 2–3 XOR components after checking every component's KCV."""
        secret = combine_components(algorithm, components)
        key = _new_key(ref, algorithm, levels, secret, exportable)
        if expected_kcv is not None and not hmac.compare_digest(key.kcv, expected_kcv):
            raise KcvMismatch(f"assembled key {ref} does not match the expected KCV")
        return self._store(key)

    def export_components(self, ref: KeyRef, count: int) -> list[KeyComponent]:
        """Fresh random XOR split of an exportable key."""
        key = self._get(ref)
        if not key.exportable:
            raise OperationNotPermitted(f"key {ref} is not exportable")
        return split_key(key.algorithm, key.secret, count)

    def set_active(self, ref: KeyRef, active: bool) -> KeyInfo:
        """Retire or re-activate a key version (persisted)."""
        with self._lock:
            key = self._keys.get(ref)
            if key is None:
                raise KeyNotFound(f"no key {ref}")
            keys = dict(self._keys)
            keys[ref] = StoredKey(
                key.ref, key.algorithm, key.levels, key.secret, key.kcv, key.exportable, active
            )
            write_store(self._path, self._kek, keys)
            self._keys = keys
            return keys[ref].info()

    # ---------------------------------------------------------------- card operations
    def load_mac2(self, dlk: KeyRef, request: LoadRequest) -> bytes:
        """Verify load MAC1 (§6) with the load session key, then compute MAC2."""
        key = self._get(dlk, KeyUsage.LOAD)
        r = request
        card = self._card_key(key, r.factors)
        sk = alg.load_session_key(key.algorithm, card, r.rnd, r.online_counter)
        mac1 = alg.mac(key.algorithm, sk, macdata.load_mac1_data(r.balance, r.amount, r.terminal))
        if not hmac.compare_digest(mac1, r.mac1):
            raise MacInvalid(f"load MAC1 does not verify under {dlk}")
        data = macdata.load_mac2_data(r.amount, r.terminal, r.date, r.time, r.ttype)
        return alg.mac(key.algorithm, sk, data)

    def _purchase_sk(self, dpk: KeyRef, r: PurchaseRequest) -> tuple[Algorithm, bytes]:
        key = self._get(dpk, KeyUsage.PURCHASE)
        card = self._card_key(key, r.factors)
        sk = alg.purchase_session_key(
            key.algorithm, card, r.rnd, r.offline_counter, r.terminal_serial
        )
        return key.algorithm, sk

    def purchase_mac1(self, dpk: KeyRef, request: PurchaseRequest) -> bytes:
        """PSAM-equivalent MAC1 over amount ‖ type ‖ T ‖ date ‖ time (§6, §8.2)."""
        algorithm, sk = self._purchase_sk(dpk, request)
        r = request
        data = macdata.purchase_mac1_data(r.amount, r.terminal, r.date, r.time, r.ttype)
        return alg.mac(algorithm, sk, data)

    def verify_purchase_mac2(self, dpk: KeyRef, request: PurchaseRequest, mac2: bytes) -> bool:
        """Whether the card's MAC2 over the amount verifies (§8.3)."""
        algorithm, sk = self._purchase_sk(dpk, request)
        expected = alg.mac(algorithm, sk, macdata.purchase_mac2_data(request.amount))
        return hmac.compare_digest(expected, mac2)

    def verify_tacs(self, dtk: KeyRef, checks: Sequence[TacCheck]) -> list[bool]:
        """TAC verdicts in input order, verified in C (`onecard.keys._tacbatch`).

        Records are grouped by issuer-level key (cached) and, within a group, by card; each
        group is one call into the extension, which derives each card's DTK and TAC key once
        and MACs that card's records with the GIL released.
        """
        key = self._get(dtk, KeyUsage.TAC)
        verdicts = [False] * len(checks)
        for prefix, by_card in _group_checks(checks, key.levels).items():
            order = [i for indices in by_card.values() for i in indices]
            factors = [checks[i].factors[-1] for i in order] if key.levels else None
            try:
                got = _tacbatch.verify(
                    key.algorithm.value,
                    self._issuer_key(key, prefix),
                    factors,
                    [checks[i].data for i in order],
                    [checks[i].tac for i in order],
                )
            except ValueError as err:  # a factor or TAC of the wrong length
                raise InvalidInput(f"TAC check: {err}") from None
            for i, ok in zip(order, got, strict=True):
                verdicts[i] = ok == 1
        return verdicts

    def _verify_tacs_python(self, dtk: KeyRef, checks: Sequence[TacCheck]) -> list[bool]:
        """Pure-Python `verify_tacs` through ``cryptography``: the reference the tests compare
        the C extension with (tests/keys/test_tacbatch.py). Not a fallback; not used in
        production."""
        key = self._get(dtk, KeyUsage.TAC)
        verdicts = [False] * len(checks)
        for prefix, by_card in _group_checks(checks, key.levels).items():
            asns = list(by_card)
            if key.levels:
                dtks = alg.diversify_many(key.algorithm, self._issuer_key(key, prefix), asns)
            else:
                dtks = [key.secret]
            for asn, card_dtk in zip(asns, dtks, strict=True):
                self._check_card_tacs(key.algorithm, card_dtk, checks, by_card[asn], verdicts)
        return verdicts

    @staticmethod
    def _check_card_tacs(
        algorithm: Algorithm,
        card_dtk: bytes,
        checks: Sequence[TacCheck],
        indices: list[int],
        verdicts: list[bool],
    ) -> None:
        tac_key = alg.tac_key(algorithm, card_dtk)
        macs = alg.mac_many(algorithm, tac_key, [checks[i].data for i in indices])
        for i, got in zip(indices, macs, strict=True):
            verdicts[i] = hmac.compare_digest(got, checks[i].tac)

    def derive_and_mac(
        self, ref: KeyRef, factors: Sequence[bytes], data: bytes, iv: bytes | None = None
    ) -> bytes:
        """Secure-messaging MAC with the card-level key (retail MAC for 3DES, SM4 MAC)."""
        key = self._get(ref, KeyUsage.SECURE_MESSAGING)
        return alg.mac(key.algorithm, self._card_key(key, factors), data, iv)

    def m1_sector_key(
        self, ref: KeyRef, uid: bytes, app_code: int, sector: int, key_type: int
    ) -> bytes:
        """Card-level M1 sector key; the M1 master itself never leaves."""
        key = self._get(ref, KeyUsage.M1)
        return alg.m1_sector_key(key.algorithm, key.secret, uid, app_code, sector, key_type)

    def _wrap(
        self,
        refs: Iterable[KeyRef],
        transport: KeyRef,
        derive: Callable[[StoredKey], bytes],
        usages: frozenset[KeyUsage],
    ) -> WrappedKeySet:
        tk = self._get(transport, KeyUsage.TRANSPORT)
        if tk.levels:
            raise InvalidInput(f"transport key {transport} must be undiversified (levels 0)")
        wrapped = []
        for ref in refs:
            key = self._get(ref, *usages)
            clear = derive(key)
            ct = alg.ecb_encrypt(tk.algorithm, tk.secret, clear)
            kcv = alg.kcv(key.algorithm, clear)
            wrapped.append(WrappedKey(ref.name, ref.version, key.algorithm, ct, kcv))
        return WrappedKeySet(transport, tk.kcv, tuple(wrapped))

    def wrap_card_keys(
        self, refs: Sequence[KeyRef], factors: Sequence[bytes], transport: KeyRef
    ) -> WrappedKeySet:
        """Card-level keys for personalisation, wrapped under a level-0 transport key."""
        return self._wrap(refs, transport, lambda k: self._card_key(k, factors), _CARD_WRAP_USAGES)

    def wrap_psam_image(
        self, refs: Sequence[KeyRef], factors: Sequence[bytes], transport: KeyRef
    ) -> WrappedKeySet:
        """PSAM keys diversified by the leading ``factors`` (none = master, for root PSAMs)."""
        return self._wrap(refs, transport, lambda k: self._partial_key(k, factors), _PSAM_USAGES)


# ---------------------------------------------------------------- pure helpers
def _new_key(
    ref: KeyRef, algorithm: Algorithm, levels: int, secret: bytes, exportable: bool
) -> StoredKey:
    if not 0 <= levels <= MAX_LEVELS:
        raise InvalidInput(f"levels must be 0..{MAX_LEVELS}, got {levels}")
    if len(secret) != KEY_BYTES:
        raise InvalidInput(f"keys are {KEY_BYTES} bytes, got {len(secret)}")
    kcv = alg.kcv(algorithm, secret)
    return StoredKey(ref, algorithm, levels, secret, kcv, exportable)


def split_key(algorithm: Algorithm, secret: bytes, count: int) -> list[KeyComponent]:
    """Split ``secret`` into ``count`` (2–3) random XOR components, each with its KCV."""
    if count not in (2, 3):
        raise InvalidInput(f"a key splits into 2 or 3 components, not {count}")
    parts = [os.urandom(len(secret)) for _ in range(count - 1)]
    last = secret
    for p in parts:
        last = alg.xor_bytes(last, p)
    parts.append(last)
    return [KeyComponent(p, alg.kcv(algorithm, p)) for p in parts]


def combine_components(algorithm: Algorithm, components: Sequence[KeyComponent]) -> bytes:
    """XOR 2–3 components after checking each KCV; `KcvMismatch` names the bad component."""
    if len(components) not in (2, 3):
        raise InvalidInput(f"a key is assembled from 2 or 3 components, not {len(components)}")
    secret = bytes(KEY_BYTES)
    for n, comp in enumerate(components, start=1):
        if len(comp.value) != KEY_BYTES:
            raise InvalidInput(f"component {n} must be {KEY_BYTES} bytes")
        if not hmac.compare_digest(alg.kcv(algorithm, comp.value), comp.kcv):
            raise KcvMismatch(f"component {n} does not match its KCV")
        secret = alg.xor_bytes(secret, comp.value)
    return secret


def _group_checks(
    checks: Sequence[TacCheck], levels: int
) -> dict[tuple[bytes, ...], dict[bytes, list[int]]]:
    """Indices grouped by issuer prefix, then by card factor (b"" when levels is 0)."""
    groups: defaultdict[tuple[bytes, ...], defaultdict[bytes, list[int]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for i, check in enumerate(checks):
        if len(check.factors) != levels:
            raise InvalidInput(f"TAC check {i} has {len(check.factors)} factors, needs {levels}")
        prefix, card = (check.factors[:-1], check.factors[-1]) if levels else ((), b"")
        groups[prefix][card].append(i)
    return {p: dict(cards) for p, cards in groups.items()}

"""List encoding for the wire and a device-side lookup structure, pure.

List entries are integer keys below 2**63 (`credential_key`): a card UID of up to 7 bytes is its
own number, a card number is offset by 2**56, anything else is hashed into [2**62, 2**63). Card
numbers and UIDs thus keep their locality, so the sorted deltas stay small.

``zdv1`` snapshot encoding: ``zlib(varint(count) ‖ varint(k0) ‖ varint(k1-k0) ‖ …)`` with keys
sorted and unique, varints little-endian base-128 (LEB128). A snapshot is split into chunks that
travel as `ListSnapshotChunk` messages; ``total_sha256`` is the hash of the whole encoding.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final

from onecard.device_agents.protocol.codes import CredentialKind, ErrorReason, ProtocolError
from onecard.device_agents.protocol.messages import ListSnapshotChunk

MAX_KEY: Final = 2**63 - 1
CARD_NO_BASE: Final = 2**56
HASHED_BASE: Final = 2**62
DEFAULT_CHUNK_BYTES: Final = 96 * 1024
MAX_ENTRIES: Final = 20_000_000


def credential_key(kind: CredentialKind, value: str) -> int:
    """The list key of a credential (see the module docstring)."""
    if kind is CredentialKind.UID and len(value) <= 14:
        return int(value, 16)
    if kind is CredentialKind.CARD_NO and value.isdigit() and int(value) < CARD_NO_BASE:
        return CARD_NO_BASE + int(value)
    digest = hashlib.sha256(f"{kind.value}:{value.strip().upper()}".encode()).digest()
    return HASHED_BASE + (int.from_bytes(digest[:8], "big") % HASHED_BASE)


def encode_keys(keys: Iterable[int]) -> bytes:
    """The ``zdv1`` encoding of a set of keys."""
    ordered = sorted(set(keys))
    if ordered and not 0 <= ordered[0] <= ordered[-1] <= MAX_KEY:
        raise ProtocolError(ErrorReason.BAD_VALUE, "list keys are 0 <= key < 2**63")
    out = bytearray(_varint(len(ordered)))
    prev = 0
    for key in ordered:
        out += _varint(key - prev)
        prev = key
    return zlib.compress(bytes(out), 9)


def decode_keys(data: bytes) -> array[int]:
    """Sorted keys of a ``zdv1`` encoding; `ProtocolError` if it is corrupt."""
    try:
        raw = zlib.decompressobj().decompress(data, 10 * MAX_ENTRIES)
    except zlib.error as err:
        raise ProtocolError(ErrorReason.BAD_VALUE, f"zdv1: {err}") from None
    values = _read_varints(raw)
    if not values or values[0] != len(values) - 1:
        raise ProtocolError(ErrorReason.BAD_VALUE, "zdv1: count does not match")
    keys: array[int] = array("q")
    total = 0
    for delta in values[1:]:
        total += delta
        keys.append(total)
    return keys


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varints(raw: bytes) -> list[int]:
    out: list[int] = []
    append = out.append
    acc = shift = 0
    for byte in raw:
        if byte < 0x80:
            append(acc | (byte << shift))
            acc = shift = 0
        else:
            acc |= (byte & 0x7F) << shift
            shift += 7
            if shift > 63:
                raise ProtocolError(ErrorReason.BAD_VALUE, "zdv1: varint too long")
    if shift:
        raise ProtocolError(ErrorReason.BAD_VALUE, "zdv1: truncated varint")
    return out


def snapshot_chunks(
    list_name: str, version: int, keys: Iterable[int], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[ListSnapshotChunk]:
    """The ``down/lists`` messages that carry the whole list at ``version``."""
    data = encode_keys(keys)
    digest = hashlib.sha256(data).hexdigest()
    parts = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
    return [
        ListSnapshotChunk(
            list=list_name,
            version=version,
            index=i,
            count=len(parts),
            total_sha256=digest,
            data=base64.b64encode(part).decode(),
        )
        for i, part in enumerate(parts)
    ]


class SnapshotAssembler:
    """Collects the chunks of one snapshot; `add` returns the keys once all have arrived.

    A chunk of another version restarts the collection (a newer snapshot supersedes).
    """

    def __init__(self) -> None:
        self._version: int | None = None
        self._parts: dict[int, bytes] = {}

    def add(self, chunk: ListSnapshotChunk) -> array[int] | None:
        """Add one chunk; the decoded keys when complete, `ProtocolError` on a bad hash."""
        if chunk.version != self._version:
            self._version, self._parts = chunk.version, {}
        try:
            self._parts[chunk.index] = base64.b64decode(chunk.data, validate=True)
        except ValueError:
            raise ProtocolError(ErrorReason.BAD_VALUE, "snapshot chunk: bad base64") from None
        if len(self._parts) < chunk.count:
            return None
        data = b"".join(self._parts[i] for i in range(chunk.count))
        self._version, self._parts = None, {}
        if hashlib.sha256(data).hexdigest() != chunk.total_sha256:
            raise ProtocolError(ErrorReason.BAD_HASH, f"snapshot {chunk.list} v{chunk.version}")
        return decode_keys(data)


class SortedKeySet:
    """A device's copy of one list: sorted 8-byte keys, binary-search lookup.

    Memory is 8 bytes per entry (8 MB per million); lookup is O(log n). Small deltas insert in
    place; large ones rebuild.
    """

    def __init__(self, keys: Iterable[int] = ()) -> None:
        self._keys: array[int] = array("q", sorted(set(keys)))

    @classmethod
    def from_sorted(cls, keys: array[int]) -> SortedKeySet:
        """Adopt keys already sorted and unique (as `decode_keys` returns them)."""
        made = cls()
        made._keys = keys
        return made

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int):
            return False
        keys = self._keys
        i = bisect_left(keys, key)
        return i < len(keys) and keys[i] == key

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def apply(self, add: Iterable[int] = (), remove: Iterable[int] = ()) -> None:
        """Add and remove keys (a delta); removing an absent key is not an error."""
        adds, removes = set(add), set(remove)
        if len(adds) + len(removes) > 64:
            merged = (set(self._keys) | adds) - removes
            self._keys = array("q", sorted(merged))
            return
        for key in removes:
            i = bisect_left(self._keys, key)
            if i < len(self._keys) and self._keys[i] == key:
                del self._keys[i]
        for key in adds - removes:
            i = bisect_left(self._keys, key)
            if i == len(self._keys) or self._keys[i] != key:
                self._keys.insert(i, key)

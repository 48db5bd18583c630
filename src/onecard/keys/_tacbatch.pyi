"""Type stub of the C extension ``onecard.keys._tacbatch`` (source: ``_tacbatch.c``)."""

from collections.abc import Sequence

from typing_extensions import Buffer

def verify(
    algorithm: str,
    key: Buffer,
    factors: Sequence[Buffer] | None,
    data: Sequence[Buffer],
    tacs: Sequence[Buffer],
    /,
) -> bytes:
    """Verify a batch of TACs under one issuer-level DTK; one 0/1 byte per record.

    ``algorithm`` ``"3des"`` or ``"sm4"``; ``key`` 16 bytes (the card DTK itself when
    ``factors`` is None); ``factors`` 8 bytes each; ``tacs`` 4 bytes each. Bad lengths raise
    ValueError. Records of one card should be adjacent (its TAC key is derived once).
    """

def time_blocks(algorithm: str, count: int, /) -> float:
    """Seconds for ``count`` single-block ECB encryptions through one reused context."""

"""Durable storage of an emulator image: one JSON file replaced atomically.

Owns the crash-safety contract the tearing rules (epurse.md §14) rest on: a commit either
fully replaces the file or leaves the previous one, never a half-written image.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class JsonStore:
    """A JSON document at ``path``; ``path=None`` keeps it in memory only (tests, benchmarks)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None

    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def load(self) -> dict[str, Any]:
        """Read the stored document. Raises FileNotFoundError when there is none."""
        if self.path is None:
            raise FileNotFoundError("in-memory store has no stored image")
        with self.path.open(encoding="utf-8") as fh:
            doc: dict[str, Any] = json.load(fh)
        return doc

    def save(self, doc: dict[str, Any]) -> None:
        """Write ``doc`` atomically: temp file in the same directory, fsync, rename."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry itself reaches the disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Configuration bundles on the device's disk, applied atomically with one step back.

``current.json`` holds the bundle in force (as received, signature included, so it is verified
again at start), ``previous.json`` the one before. Applying: write ``next.tmp`` and fsync it,
copy current to ``previous.tmp``, fsync, rename onto ``previous.json``, then rename ``next.tmp``
onto ``current.json`` and fsync the directory. A power cut at any step leaves ``current.json``
either the old bundle or the new one, never a mix; stray ``.tmp`` files are removed at open.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from onecard.device_agents.protocol.codec import decode, encode
from onecard.device_agents.protocol.codes import ProtocolError
from onecard.device_agents.protocol.messages import ConfigBundle
from onecard.device_agents.protocol.topics import Topic

StepHook = Callable[[str], None]
"""Called with a step name before each step (tests raise in it to simulate a power cut)."""


class ConfigFiles:
    """The config directory of one device."""

    def __init__(self, folder: Path, *, fsync: bool = True, step: StepHook | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._step = step or (lambda _name: None)
        for stray in self.folder.glob("*.tmp"):
            stray.unlink()

    def _read(self, name: str) -> ConfigBundle | None:
        path = self.folder / name
        if not path.exists():
            return None
        try:
            bundle = decode(Topic.CONFIG, path.read_bytes())
        except ProtocolError:
            return None
        return bundle if isinstance(bundle, ConfigBundle) else None

    def current(self) -> ConfigBundle | None:
        """The bundle in force, or None."""
        return self._read("current.json")

    def previous(self) -> ConfigBundle | None:
        """The bundle before it (for rollback), or None."""
        return self._read("previous.json")

    def apply(self, bundle: ConfigBundle) -> None:
        """Make ``bundle`` current, keeping the old one as previous (see module docstring)."""
        self._step("write")
        self._write("next.tmp", encode(bundle))
        old = self.folder / "current.json"
        if old.exists():
            self._step("keep_previous")
            self._write("previous.tmp", old.read_bytes())
            os.replace(self.folder / "previous.tmp", self.folder / "previous.json")
        self._step("switch")
        os.replace(self.folder / "next.tmp", old)
        self._sync_dir()

    def rollback(self) -> ConfigBundle | None:
        """Swap current and previous; the bundle now in force (None if there was no previous)."""
        before = self.previous()
        if before is None:
            return None
        self.apply(before)
        return before

    def _write(self, name: str, data: bytes) -> None:
        path = self.folder / name
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            if self._fsync:
                os.fsync(fh.fileno())

    def _sync_dir(self) -> None:
        if not self._fsync:
            return
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

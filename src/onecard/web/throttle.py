"""Per-address throttling of failed logins (the per-operator lockout lives in the database).

In-process and approximate by design: it blunts password spraying across many usernames from
one address; the database lockout is the authoritative, cross-process control.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class FailureThrottle:
    """Allow at most ``limit`` failures per key within ``window`` seconds."""

    def __init__(self, limit: int = 20, window: float = 300.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, key: str) -> bool:
        """True when ``key`` has used up its failures for now."""
        with self._lock:
            return len(self._prune(key)) >= self.limit

    def failed(self, key: str) -> None:
        """Count one failure for ``key``."""
        with self._lock:
            self._prune(key).append(time.monotonic())

    def _prune(self, key: str) -> deque[float]:
        q = self._failures[key]
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

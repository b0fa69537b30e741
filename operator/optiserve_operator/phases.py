"""Each model's phase as last reconciled, and how many models are in each: the
``optiserve_models`` gauge.

Written by every worker thread. Counting by iterating a shared dict while another thread added
a model to it raised ``RuntimeError: dictionary changed size during iteration`` inside the
status write, which at a restart (every pass adds a model the new operator has not seen) failed
passes of Ready, unchanged models: each wrote a TransientError condition and then, retried,
Ready again. The counts are kept with the table, under one lock, and published under it, so
the gauge never shows an older count than the table's.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping

Key = tuple[str, str]  # (namespace, name)


class PhaseTable:
    def __init__(self, publish: Callable[[Mapping[str, int]], None]) -> None:
        self._publish = publish  # called with the counts after every change, under the lock
        self._lock = threading.Lock()
        self._phases: dict[Key, str] = {}
        self._counts: Counter[str] = Counter()

    def set(self, key: Key, phase: str) -> str | None:
        """Record ``key``'s phase; its previous one, None the first time it is seen."""
        with self._lock:
            previous = self._phases.get(key)
            self._phases[key] = phase
            if previous != phase:
                self._move(previous, phase)
            return previous

    def forget(self, key: Key) -> None:
        """The model is gone (deleted, or being deleted)."""
        with self._lock:
            previous = self._phases.pop(key, None)
            if previous is not None:
                self._move(previous, None)

    def _move(self, old: str | None, new: str | None) -> None:
        if old is not None:
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        if new is not None:
            self._counts[new] += 1
        self._publish(dict(self._counts))

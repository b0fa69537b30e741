"""A client-go style work queue on asyncio: each key is processed by one worker at a time.

Event handlers only ``add`` keys; workers ``get`` a key, reconcile it and call ``done``. A key
added while it is processed is queued again when its worker is done, so no change is lost
and no two workers reconcile the same OptimizedModel at once. Keys are deduplicated: a burst
of child events costs one reconcile.

Two lanes: a key added ``urgent`` (a user's edit of a model already reconciled) is handed out
before the others, so one edit does not wait behind a thousand models being listed after a
restart or rolled out at once (no head-of-line blocking; controller-runtime's priority queue
puts the initial listing last for the same reason). Within a lane, first in, first out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class WorkQueue(Generic[Key]):
    def __init__(self) -> None:
        # One token per queued key; the key itself waits in its lane.
        self._tokens: asyncio.Queue[None] = asyncio.Queue()
        self._urgent: deque[Key] = deque()
        self._normal: deque[Key] = deque()
        self._queued: set[Key] = set()
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._dirty_urgent: set[Key] = set()
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: Key, urgent: bool = False) -> None:
        if key in self._processing:
            self._dirty.add(key)
            if urgent:
                self._dirty_urgent.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            (self._urgent if urgent else self._normal).append(key)
            self._tokens.put_nowait(None)
        elif urgent and key in self._normal:  # queued already: moves to the front lane
            self._normal.remove(key)
            self._urgent.append(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Add ``key`` in ``delay`` seconds; an earlier pending request for it wins."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        handle = loop.call_at(when, self._fire, key)
        self._timers[key] = (when, handle)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Key:
        await self._tokens.get()
        key = self._urgent.popleft() if self._urgent else self._normal.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Key) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            urgent = key in self._dirty_urgent
            self._dirty_urgent.discard(key)
            self.add(key, urgent)

    def forget(self, key: Key) -> None:
        """Drop pending timers of a deleted object (a queued pass finds it gone and stops)."""
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()

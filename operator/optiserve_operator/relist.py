"""Children deleted while a watch was re-listed: swept from the child cache (child_cache.py).

When the API server closes a watch with ``410 Gone`` (its resource version compacted away, or
a restarted API server whose watch cache begins later), kopf lists the kind afresh and watches
on from that listing. It reports every listed object (an event of type None) but nothing of an
object that was there before and is gone now: no DELETED event comes for it. The cache would
keep such a child until its name's next event, and a pass would take the missing Deployment
for present and never put it back.

client-go's informers replace their store with each listing. kopf shows its handlers neither
the listing as a whole nor where it starts and ends, so the operator does it on the side: a
burst of listing events of a kind is a relist, and once it has been quiet for ``QUIET_SECONDS``
the operator lists that kind's names itself (metadata only, paged, a consistent read, at its
client rate limit) and drops from the cache every object stored before that listing was asked
for and absent from it (``ChildCache.sweep``), then queues the model that owned each one: its
pass finds the child missing and applies it again. A relist of the models sweeps every cached
kind too: the API server drops all its watches at once, and a kind with nothing left to list
sends no listing event at all. The start's own listing is swept as well (a few metadata
listings; nothing can be stale then, and it keeps one rule for every listing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from optiserve_operator.cache_fill import CachedResources
from optiserve_operator.child_cache import ChildCache, Obj
from optiserve_operator.kube import Kube

LOG = logging.getLogger("optiserve.operator")
QUIET_SECONDS = 2.0
RETRY_SECONDS = 10.0


@dataclass
class RelistSweeper:
    """Lives on kopf's event loop: handlers call ``listed``; sweeps run as one task."""

    kube: Kube
    cache: ChildCache
    resources: CachedResources  # kind -> (apiVersion, plural), as the start's fill lists them
    label_selector: str  # what the watches of these kinds select
    # The operator's namespaces (globs allowed); empty: cluster-wide, one listing per kind.
    # Otherwise each namespace holding cached objects of the kind is listed (RBAC may allow
    # no cluster-wide listing then).
    namespaces: tuple[str, ...]
    # Called with each swept child (a dropped object): queues the model that owned it.
    gone: Callable[[Obj], None]
    quiet_seconds: float = QUIET_SECONDS
    sweeps: int = 0
    _due: dict[str, float] = field(default_factory=dict)  # kind -> loop time to sweep at
    _task: asyncio.Task[None] | None = None

    def listed(self, kind: str | None = None) -> None:
        """A listing event of ``kind`` (None: of the models, which sweeps every kind)."""
        kinds = [kind] if kind is not None else list(self.resources)
        at = asyncio.get_running_loop().time() + self.quiet_seconds
        for each in kinds:
            if each in self.resources:
                self._due[each] = at
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="optiserve-relist-sweep")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due:
            now = loop.time()
            ready = sorted(kind for kind, at in self._due.items() if at <= now)
            for kind in ready:
                del self._due[kind]
                try:
                    await self.sweep(kind)
                except Exception as err:  # the API server away again: sweep later
                    LOG.warning(
                        "relist sweep of %s failed (retry in %.0fs): %s", kind, RETRY_SECONDS, err
                    )
                    self._due.setdefault(kind, loop.time() + RETRY_SECONDS)
            if self._due:
                await asyncio.sleep(max(0.0, min(self._due.values()) - loop.time()))

    async def sweep(self, kind: str) -> list[Obj]:
        """List ``kind`` now and drop what the cache kept of objects gone since."""
        api_version, plural = self.resources[kind]
        mark = self.cache.mark()
        if self.namespaces:
            # The cache holds only what the watches of these namespaces delivered.
            held = self.cache.namespaces(kind)
            scope: set[str] | None = held
            listed: set[tuple[str, str]] = set()
            for namespace in sorted(held):
                listed |= await asyncio.to_thread(
                    self.kube.list_names, api_version, plural, namespace, self.label_selector
                )
        else:
            scope = None
            listed = await asyncio.to_thread(
                self.kube.list_names, api_version, plural, None, self.label_selector
            )
        gone = self.cache.sweep(kind, listed, mark, scope)
        self.sweeps += 1
        for obj in gone:
            meta = obj.get("metadata") or {}
            LOG.info(
                "%s %s/%s was deleted while its watch re-listed: dropped from the cache",
                kind,
                meta.get("namespace"),
                meta.get("name"),
            )
            self.gone(obj)
        return gone

"""What ``Kube`` remembers between requests, so that a thousand models' passes do not ask the
API server what it answered a moment ago; bounded however many models come and go.

- A resource type the API server does not serve (a CRD not installed: KEDA's ScaledObject, the
  Gateway API's HTTPRoute) is remembered as such for ``UNSERVED_TTL``, instead of asked about
  in every pass of every model; a CRD installed later is seen within that time.
- A child this operator applied is in flight to the watches' cache for a moment: missing from
  the cache that soon after, it is looked up on the API server instead (not applied again).
"""

from __future__ import annotations

from collections.abc import Callable

from optiserve_operator.kube_transport import KubeError

UNSERVED_TTL = 30.0
IN_FLIGHT_SECONDS = 60.0
ChildRef = tuple[str, str, str]  # (kind, namespace, name)


class KubeMemo:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        # (apiVersion, kind) of a resource type found unserved -> (until when, its 404).
        self.unserved: dict[tuple[str, str], tuple[float, KubeError]] = {}
        # (kind, namespace, name) of cached kinds applied lately -> when (monotonic seconds).
        self.applied: dict[ChildRef, float] = {}
        self._swept = clock()  # when _sweep last ran

    def known_unserved(self, api_version: str, kind: str) -> KubeError | None:
        """The remembered 404 of a resource type found unserved less than UNSERVED_TTL ago."""
        known = self.unserved.get((api_version, kind))
        if known is None:
            return None
        if self.clock() < known[0]:
            # A new error each time: raising one instance again and again would chain every
            # raise's traceback onto it, and with them every pass's frames and what they held
            # (the model, its spec and status), for as long as the type stays unserved.
            error = known[1]
            return KubeError(error.status, error.reason, error.message)
        self.unserved.pop((api_version, kind), None)
        return None

    def note_unserved(self, api_version: str, kind: str, err: KubeError) -> None:
        # A missing object is a 404 with a Status of reason NotFound; a missing resource type
        # is a bare "404 page not found" from the API server's router.
        if err.status == 404 and err.reason != "NotFound":
            now = self.clock()
            self._sweep(now)
            # A copy never raised: no traceback, so no pass's frames are kept.
            copy = KubeError(err.status, err.reason, err.message)
            self.unserved[(api_version, kind)] = (now + UNSERVED_TTL, copy)

    def note_applied(self, ref: ChildRef) -> None:
        """A child just written, whose watch event may not have reached the cache."""
        now = self.clock()
        self._sweep(now)
        self.applied[ref] = now

    def in_flight(self, ref: ChildRef, cached: bool) -> bool:
        """Whether a child the cache does not hold (``cached`` false) was applied a moment ago,
        so that its watch event is on the way and the API server is to be asked instead."""
        applied = self.applied.get(ref)
        if cached or applied is None:
            self.applied.pop(ref, None)  # there (the cache has caught up), or not ours
            return False
        if self.clock() - applied > IN_FLIGHT_SECONDS:
            self.applied.pop(ref, None)
            return False
        return True

    def forget_applied(self, ref: ChildRef) -> None:
        self.applied.pop(ref, None)

    def _sweep(self, now: float) -> None:
        """Forgets what expired (a child never read back: its model went; an unserved type
        not asked about again), at most once per IN_FLIGHT_SECONDS: both maps hold only what
        the last two minutes wrote, however many models came and went."""
        if now - self._swept < IN_FLIGHT_SECONDS:
            return
        self._swept = now
        for ref, when in list(self.applied.items()):
            if now - when > IN_FLIGHT_SECONDS:
                self.applied.pop(ref, None)
        for key, (until, _) in list(self.unserved.items()):
            if now >= until:
                self.unserved.pop(key, None)

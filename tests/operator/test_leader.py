"""The Lease election's decisions (leader.py) against an in-memory store with the API server's
optimistic concurrency (a PUT at an old resourceVersion is a 409). The real API server and
two real operator processes are in tests/e2e/test_leader_election.py."""

from __future__ import annotations

import copy
from typing import Any, cast

from optiserve_operator.kube import Kube
from optiserve_operator.kube_transport import KubeError
from optiserve_operator.leader import LEASE_SECONDS, LeaderElector


class LeaseStore:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.writes = 0

    def get(self, *_: Any) -> dict[str, Any] | None:
        return copy.deepcopy(self.lease)

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise KubeError(409, "AlreadyExists", "exists")
        return self._store(manifest)

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        assert self.lease is not None
        if manifest["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        return self._store(manifest)

    def _store(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        self.lease = copy.deepcopy(manifest)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def electors(store: LeaseStore, clock: Clock) -> tuple[LeaderElector, LeaderElector]:
    kube = cast(Kube, store)
    return (
        LeaderElector(kube, "ns", "lease", "a", clock=clock),
        LeaderElector(kube, "ns", "lease", "b", clock=clock),
    )


def test_the_first_takes_the_lease_and_the_second_stands_by_while_it_renews() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.step()
    for _ in range(20):  # 30 s of renewals: b never takes over
        clock.now += 1.5
        assert a.step()
        assert not b.step()
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "a"
    assert store.lease["spec"]["leaseTransitions"] == 0


def test_a_standby_takes_over_once_the_holder_stops_renewing_and_not_before() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.step()
    assert not b.step()  # b first sees a's record now
    clock.now += LEASE_SECONDS - 0.5
    assert not b.step()  # not yet expired on b's clock
    clock.now += 1.0
    assert b.step()
    assert store.lease is not None
    assert store.lease["spec"]["holderIdentity"] == "b"
    assert store.lease["spec"]["leaseTransitions"] == 1
    assert not a.step() and a.holder == "b"  # the old leader sees it lost


def test_expiry_is_judged_on_the_standby_s_clock_from_when_it_saw_the_record() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.step()
    # An old renewTime on the record says nothing: b only trusts its own observation.
    assert store.lease is not None
    store.lease["spec"]["renewTime"] = "2000-01-01T00:00:00.000000Z"
    assert not b.step()


def test_two_replicas_racing_for_an_expired_lease_cannot_both_win() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    c = LeaderElector(cast(Kube, store), "ns", "lease", "c", clock=clock)
    assert a.step()
    assert not b.step() and not c.step()
    clock.now += LEASE_SECONDS + 1
    stale = store.get()
    assert b.step()
    store_get = store.get
    store.get = lambda *_: copy.deepcopy(stale)  # type: ignore[method-assign]
    assert not c.step()  # c read before b's write: its PUT is refused (409)
    store.get = store_get  # type: ignore[method-assign]
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "b"


def test_release_hands_over_at_the_next_try() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = electors(store, clock)
    assert a.step()
    assert not b.step()
    a.release()
    assert b.step()  # no waiting for expiry
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "b"
    b.release()
    a.release()  # not the holder: leaves it alone
    assert store.lease["spec"]["holderIdentity"] == ""

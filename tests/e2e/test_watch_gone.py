"""The API server closes the operator's watches and answers their resumption with 410 Gone: the
operator re-lists, reconciles what changed in the gap, loses nothing, duplicates nothing, and
does not storm the API server.

Real 410s on the local control plane (tests/e2e/scale.py's fleet: the operator as its own
user, the API server's audit log of its requests): the operator is frozen (SIGSTOP, a stalled
process or a partitioned node); kube-apiserver is restarted on the same etcd, which closes every
watch; then, with no watch of the operator open, a child is deleted, a spec edited, a model
deleted and another created, and etcd is compacted to its current revision. Resumed, kopf's
watches reconnect from their old resourceVersions, which the new API server's watch cache (it
began after them) and etcd (compacted past them) no longer have: ``410 Gone``, and kopf
re-lists every kind. The deleted child sends no DELETED event on a relist: only the relist
sweep (operator/optiserve_operator/relist.py) tells the child cache it is gone.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from optiserve_testing.waiting import wait_until
from tests.e2e.scale import Fleet, is_ready, observed, running_fleet, spec_change

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(600)]

SIZE = 12
# --verbose: kopf logs the 410 it received ("Restarting the watch-stream ...") at debug level.
OPERATOR_ARGS = ("--verbose",)
# Kinds the operator watches: kopf lists each again after its 410.
RELISTED = ("optimizedmodels", "deployments", "services", "jobs", "configmaps")
# kopf's watches: the models, 8 kinds of children, the optimizer pods, and the CRDs it
# discovers resources by.
WATCHED_KINDS = 11
# Requests of the operator's user from the resumption until all is converged and 10 s more:
# kopf's relists (11 kinds), the relist sweep's listings (8 kinds), one pass per model (a read
# of the model) and the writes that put back and roll out what changed. A retry storm makes
# hundreds a second.
MAX_REQUESTS = 6 * SIZE + 60
# In any one second, as the API server received them, of the operator's own client: its token
# bucket's burst (--api-burst 30) and --api-qps 20 a second (the passes and the sweep's
# listings) over that second and half a second more of transport and scheduling jitter on a
# loaded machine (measured up to 49). kopf's requests (its relists) do not take from the
# bucket: they are counted apart, at most two listings of each kind it watches. A storm of
# retries or relists makes hundreds a second.
MAX_CLIENT_REQUESTS_IN_A_SECOND = 30 + 20 * 1.5
MAX_KOPF_LISTINGS_OF_A_KIND = 2
QUIET_WINDOW_S = 10.0
MAX_REQUESTS_WHEN_QUIET = 5


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with running_fleet(SIZE, OPERATOR_ARGS) as started:
        yield started


def busiest_second(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The most requests received within one second."""
    timed = sorted(
        (
            datetime.fromisoformat(
                e["requestReceivedTimestamp"].replace("Z", "+00:00")
            ).timestamp(),
            i,
        )
        for i, e in enumerate(entries)
    )
    best: list[int] = []
    start = 0
    for end, (at, _) in enumerate(timed):
        while at - timed[start][0] >= 1.0:
            start += 1
        if end - start + 1 > len(best):
            best = [i for _, i in timed[start : end + 1]]
    return [entries[i] for i in best]


def summary(entries: list[dict[str, Any]]) -> Counter[str]:
    return Counter(
        f"{e['verb']} {e['objectRef'].get('resource')} {e.get('userAgent', '').split('/')[0]}"
        for e in entries
    )


def children_of(fleet: Fleet, model: str) -> dict[str, int]:
    counts = {}
    for kind in ("deployments", "services", "jobs", "configmaps"):
        found = fleet.cluster.kubectl(
            "get", kind, "-n", fleet.namespace, "-l", f"optiserve.io/model={model}", "-o", "name"
        )
        counts[kind] = len(found.stdout.split())
    return counts


def deployment(fleet: Fleet, name: str) -> dict[str, Any] | None:
    found = fleet.cluster.kubectl("get", "deployment", name, "-n", fleet.namespace, "-o", "json")
    return json.loads(found.stdout) if found.returncode == 0 else None


def test_watches_answered_410_gone_relist_reconcile_the_gap_and_lose_nothing(
    fleet: Fleet,
) -> None:
    names = fleet.names()
    fleet.create_seeded(names)
    wait_until("the fleet Ready", lambda: fleet.ready(set(names)) == SIZE, timeout_s=240)
    operator = fleet.operator
    assert operator is not None
    cluster, ns = fleet.cluster, fleet.namespace
    lost_child, edited, removed = names[0], names[1], names[2]
    added = "late-0000"

    fleet.pause_operator()
    try:
        # Every watch closed first: what the old API server streamed before it stopped is in
        # the frozen operator's socket buffers, and would be read on resumption.
        cluster.restart_apiserver()
        # The gap: changes no watch of the operator streams to it.
        cluster.kubectl("delete", "deployment", lost_child, "-n", ns, check=True)
        generation = spec_change(fleet, edited, 2)
        cluster.kubectl("delete", "om", removed, "-n", ns, "--wait=false", check=True)
        fleet.apply([added])
        fleet.seed([added])
        wait_until(
            "the removed model's children collected",
            lambda: not any(children_of(fleet, removed).values()),
            timeout_s=90,
        )
        # The operator's resourceVersions predate the new API server's watch cache; etcd
        # forgets them too.
        revision = cluster.compact_etcd()
        mark = fleet.audit.mark()
    finally:
        fleet.resume_operator()
    resumed = time.monotonic()

    # The child deleted in the gap: the cache drops it and its model puts it back.
    wait_until("the lost Deployment re-created", lambda: deployment(fleet, lost_child), 90)
    # The edit made in the gap is reconciled, the model created in the gap is served.
    wait_until("the edit observed", lambda: observed(fleet, edited, generation), timeout_s=90)
    edited_deployment = deployment(fleet, edited)
    assert edited_deployment is not None and edited_deployment["spec"]["replicas"] == 2
    expected = (set(names) - {removed}) | {added}
    wait_until("every model Ready", lambda: fleet.ready(expected) == len(expected), 120)
    converged = time.monotonic() - resumed
    time.sleep(QUIET_WINDOW_S)
    quiet_from = fleet.audit.mark()
    time.sleep(QUIET_WINDOW_S)

    # The 410s were real: kopf was told "too old resource version" and listed again.
    logs = operator.full_logs()
    assert "Restarting the watch-stream for deployments" in logs, operator.logs()
    entries = fleet.audit.entries_since(mark)
    kopf_lists = Counter(
        e["objectRef"]["resource"]
        for e in entries
        if e["verb"] == "list" and e.get("userAgent", "").startswith("kopf")
    )
    for resource in RELISTED:
        assert kopf_lists[resource] >= 1, kopf_lists
    assert "dropped from the cache" in logs

    # Nothing lost, nothing twice, nothing left of the model deleted in the gap.
    for name in expected:
        counts = children_of(fleet, name)
        assert counts["deployments"] == 1 and counts["services"] == 1, (name, counts)
        assert counts["jobs"] == 0, (name, counts)  # the artifacts existed
    assert not any(children_of(fleet, removed).values())
    models = {m["metadata"]["name"]: m for m in fleet.models()}
    assert set(models) == expected
    assert all(is_ready(m) for m in models.values())

    # No storm: a bounded number of requests, at a bounded rate, and quiet once converged.
    assert len(entries) <= MAX_REQUESTS, summary(entries)
    client = [e for e in entries if not e.get("userAgent", "").startswith("kopf")]
    busiest = busiest_second(client)
    assert len(busiest) <= MAX_CLIENT_REQUESTS_IN_A_SECOND, summary(busiest)
    # Every kind listed again, not in a loop (a storm of relists lists it again and again).
    assert max(kopf_lists.values()) <= MAX_KOPF_LISTINGS_OF_A_KIND, kopf_lists
    assert len(entries) - len(client) <= MAX_KOPF_LISTINGS_OF_A_KIND * WATCHED_KINDS, summary(
        [e for e in entries if e not in client]
    )
    quiet = fleet.audit.entries_since(quiet_from)
    assert len(quiet) <= MAX_REQUESTS_WHEN_QUIET, quiet
    kinds = summary(entries)
    print(
        f"requests after the resumption: {dict(kinds)}; kopf's listings: {dict(kopf_lists)}\n"
        f"etcd compacted at revision {revision}, API server restarted; converged "
        f"{converged:.1f}s after the resumption with {len(entries)} requests "
        f"(busiest second of its client {len(busiest)}); "
        f"{len(quiet)} in {QUIET_WINDOW_S:.0f}s once quiet"
    )

"""A hundred OptimizedModels on the real control plane (the CI-sized benchmarks/scale_bench.py):
all reach Ready, nothing is written again when nothing changed, nothing is left after delete.

Its own cluster (tests/e2e/scale.py): nodes with room for the pods, and an API server audit
log of the operator's user, from which its writes are counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from optiserve_testing.waiting import wait_until
from tests.e2e.scale import Fleet, ready_timeline, running_fleet

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(600)]

SIZE = 100
# The operator's defaults (QPS 20, burst 30, 4 workers): with children read from the watches a
# model costs ~9 requests, so the hundred are Ready in about 45 s here (docs/scale.md).
OPERATOR_ARGS: tuple[str, ...] = ()
# Bounds with room over what was measured (9.2 and 1.3) and well under reading live (34, 14).
MAX_REQUESTS_PER_MODEL = 15
MAX_RELIST_REQUESTS_PER_MODEL = 3


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with running_fleet(SIZE, OPERATOR_ARGS) as started:
        yield started


def test_a_hundred_models_converge_write_nothing_when_unchanged_and_leave_nothing(
    fleet: Fleet,
) -> None:
    names = fleet.names()
    burst = fleet.audit.mark()
    fleet.create_seeded(names)
    *_, (elapsed, ready) = ready_timeline(fleet, set(names), timeout_s=300, every_s=2)
    operator = fleet.operator
    assert operator is not None
    assert ready == SIZE, f"{ready}/{SIZE} Ready after {elapsed:.0f}s\n{operator.logs()}"
    # Children are read from the watches: ~9 requests a model (the model read twice, the
    # writes); reading them live was ~34 (docs/scale.md).
    requests = fleet.audit.requests_since(burst)
    assert sum(requests.values()) <= MAX_REQUESTS_PER_MODEL * SIZE, requests
    # The artifacts existed: no optimization Job was started for any of them.
    assert fleet.children()["jobs"] == 0
    assert fleet.children()["deployments"] == SIZE

    # An unchanged re-apply of all of them: kubectl sends nothing, the operator writes nothing.
    mark = fleet.audit.mark()
    output = fleet.apply(names)
    assert output.count(" unchanged") == SIZE
    time.sleep(5)
    assert fleet.audit.writes_since(mark) == {}

    # A restart looks at every model afresh (the resync's path): each is reconciled, and
    # finding every child as wanted, writes nothing (no apply, no status, no event).
    mark = fleet.audit.mark()
    operator.stop()
    operator.start()
    wait_until(
        "every model reconciled by the new operator",
        lambda: _reconciled(fleet) >= SIZE,
        timeout_s=180,
    )
    # A pass that failed is retried after 0.5 s or more, and would write then (a failed pass
    # of a Ready model wrote a TransientError condition, then Ready again: phases.py).
    time.sleep(3)
    assert fleet.audit.writes_since(mark) == {}
    assert fleet.metric("optiserve_reconcile_errors_total") == 0, operator.logs()
    # A relist of everything costs a read of each model, and kopf's listings (1.3 a model).
    requests = fleet.audit.requests_since(mark)
    assert sum(requests.values()) <= MAX_RELIST_REQUESTS_PER_MODEL * SIZE, requests

    fleet.cluster.kubectl(
        "delete", "om", "--all", "-n", fleet.namespace, "--wait=false", check=True
    )
    wait_until(
        "every model and child gone",
        lambda: not fleet.models() and not any(fleet.children().values()),
        timeout_s=240,
        every_s=2,
    )


def _reconciled(fleet: Fleet) -> float:
    try:
        return fleet.metric("optiserve_reconciles_total")
    except OSError:  # the restarted operator is not serving metrics yet
        return 0.0

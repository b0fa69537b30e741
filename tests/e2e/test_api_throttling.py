"""The API server throttles the operator (real 429s) and the operator still converges, at a
bounded request rate.

API Priority and Fairness on a real kube-apiserver: a FlowSchema sends every request of the
operator's user to a priority level with the smallest share and no queue (``Reject``), on an
API server whose total concurrency is small, so the level gets a single seat and any two
concurrent requests of the operator's eight workers make one of them a 429. The operator
waits as Retry-After says (ratelimit.py), its token bucket (--api-qps / --api-burst) bounds
its rate throughout, and the work queue's backoff takes what stays refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.waiting import wait_until
from tests.e2e.operator_audit import OPERATOR_USER
from tests.e2e.scale import Fleet, ready_timeline, running_fleet, sum_series

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(600)]

SIZE = 20
QPS, BURST = 20, 20
LEVEL = "optiserve-one-seat"
# 100 + 50 seats in all; a share of 1 against the built-in levels' 245 rounds up to one seat.
APISERVER_ARGS = ("--max-requests-inflight=100", "--max-mutating-requests-inflight=50")
PRIORITY_AND_FAIRNESS = [
    {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": LEVEL},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": 1,
                "lendablePercent": 0,
                "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"},
            },
        },
    },
    {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": LEVEL},
        "spec": {
            "priorityLevelConfiguration": {"name": LEVEL},
            "matchingPrecedence": 1000,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [{"kind": "User", "user": {"name": OPERATOR_USER}}],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "namespaces": ["*"],
                            "clusterScope": True,
                        }
                    ],
                }
            ],
        },
    },
]


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    operator_args = ("--workers", "8", "--api-qps", str(QPS), "--api-burst", str(BURST))
    with running_fleet(SIZE, operator_args, APISERVER_ARGS) as started:
        started.cluster.apply(PRIORITY_AND_FAIRNESS)
        wait_until("the FlowSchema in force", lambda: _in_force(started.cluster), timeout_s=60)
        yield started


def _in_force(cluster: LocalCluster) -> bool:
    """The API server's APF controller has seen the schema and found its level."""
    shown = cluster.kubectl("get", "flowschema", LEVEL, "-o", "json")
    if shown.returncode != 0:
        return False
    conditions = (json.loads(shown.stdout).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Dangling" and c.get("status") == "False" for c in conditions)


def _rejected(cluster: LocalCluster) -> float:
    text = cluster.kubectl("get", "--raw", "/metrics", check=True).stdout
    return sum_series(text, "apiserver_flowcontrol_rejected_requests_total", f'"{LEVEL}"')


def test_the_operator_converges_through_real_429s_at_a_bounded_rate(fleet: Fleet) -> None:
    names = fleet.names()
    requests_before = fleet.metric("optiserve_api_requests_total")
    started = time.monotonic()
    fleet.create_seeded(names)
    *_, (elapsed, ready) = ready_timeline(fleet, set(names), timeout_s=400, every_s=2)
    window = time.monotonic() - started
    operator = fleet.operator
    assert operator is not None
    assert ready == SIZE, f"{ready}/{SIZE} Ready after {elapsed:.0f}s\n{operator.logs()}"

    # The API server did refuse the operator, and the operator saw and obeyed it.
    assert _rejected(fleet.cluster) > 0
    throttled = fleet.metric("optiserve_api_requests_total", 'code="429"')
    assert throttled > 0
    # Never faster than its token bucket, retries included: no retry storm.
    made = fleet.metric("optiserve_api_requests_total") - requests_before
    assert made <= BURST + QPS * window, (made, window)
    assert fleet.metric("optiserve_client_rate_limit_wait_seconds_total") > 0
    print(
        f"{SIZE} models Ready in {elapsed:.0f}s; {made:.0f} requests in {window:.0f}s "
        f"({made / window:.1f}/s, limit {QPS}/s), {throttled:.0f} answered 429"
    )

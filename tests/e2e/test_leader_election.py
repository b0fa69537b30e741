"""Two operator replicas with --leader-elect on the real control plane: one reconciles, the
other stands by; SIGKILL of the leader mid-optimization hands over within the stated bound and
nothing is duplicated or lost (leader.py)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from optiserve_operator.leader import TAKEOVER_BOUND
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.processes import free_ports
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess
from tests.e2e.objects import items, tiny, wait_ready
from tests.e2e.scale import sum_series

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(900)]

LEASE = "optiserve-operator"


class Replica(OperatorProcess):
    def __init__(self, cluster: LocalCluster, log_dir: Path, namespace: str) -> None:
        self.metrics_port = free_ports(1)[0]
        super().__init__(
            cluster,
            log_dir,
            extra_args=(
                "--leader-elect",
                "--leader-election-namespace",
                namespace,
                "--metrics-port",
                str(self.metrics_port),
            ),
        )

    def identity(self) -> str | None:
        """The identity this replica logged on becoming leader, if it has."""
        for line in self.full_logs().splitlines():
            if "now leads" in line:
                return line.split("leader election: ", 1)[1].split(" now leads", 1)[0]
        return None

    def reconciles(self) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return sum_series(response.read().decode(), "optiserve_reconciles_total")


@pytest.fixture
def replicas(
    cluster: LocalCluster, crd: None, tmp_path: Path, e2e_namespace: str
) -> Iterator[tuple[Replica, Replica]]:
    first = Replica(cluster, tmp_path / "a", e2e_namespace)
    second = Replica(cluster, tmp_path / "b", e2e_namespace)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    yield first, second
    first.stop()
    second.stop()


def holder(cluster: LocalCluster, ns: str) -> str:
    found = cluster.kubectl("get", "lease", LEASE, "-n", ns, "-o", "json")
    if found.returncode != 0:
        return ""
    return str(json.loads(found.stdout)["spec"].get("holderIdentity") or "")


def test_sigkill_of_the_leader_hands_over_within_the_bound_and_duplicates_nothing(
    cluster: LocalCluster, e2e_namespace: str, replicas: tuple[Replica, Replica]
) -> None:
    ns = e2e_namespace
    first, second = replicas
    first.start()
    wait_until("the first replica leads", lambda: first.identity() is not None, timeout_s=90)
    second.start()
    wait_until("the standby serves metrics", lambda: _up(second), timeout_s=90, every_s=0.5)
    assert holder(cluster, ns) == first.identity()

    cluster.apply([tiny("handover")], namespace=ns)
    # Kill the leader once it created the Job, while the optimizer runs.
    wait_until("the Job", lambda: len(items(cluster, ns, "jobs", "handover")) == 1, timeout_s=120)
    assert second.reconciles() == 0, "the standby reconciled while the other replica led"
    assert first.reconciles() > 0
    killed_at = time.monotonic()
    first.kill()
    wait_until(
        "the standby holds the lease",
        lambda: second.identity() is not None and holder(cluster, ns) == second.identity(),
        timeout_s=60,
        every_s=0.2,
    )
    takeover = time.monotonic() - killed_at
    # The Lease's bound (11 s) plus the standby's GET and PUT and this poll's kubectl on a
    # loaded machine: within the 15 s the issue asks for.
    assert takeover < 15.0, f"hand-over took {takeover:.1f}s (Lease bound {TAKEOVER_BOUND}s)"

    obj = wait_ready(cluster, second, ns, "handover")
    assert second.reconciles() > 0
    # Nothing twice: one Job (its deterministic name), one spec ConfigMap, one Deployment.
    assert len(items(cluster, ns, "jobs", "handover")) == 1
    assert len(items(cluster, ns, "configmaps", "handover")) == 1
    assert len(items(cluster, ns, "deployments", "handover")) == 1
    assert obj["status"]["artifact"]["digest"] == obj["status"]["recipeDigest"]
    print(f"hand-over after SIGKILL: {takeover:.1f}s (bound {TAKEOVER_BOUND:.1f}s)")


def test_a_graceful_stop_releases_the_lease_for_an_immediate_hand_over(
    cluster: LocalCluster, e2e_namespace: str, replicas: tuple[Replica, Replica]
) -> None:
    ns = e2e_namespace
    first, second = replicas
    first.start()
    wait_until("a leader", lambda: first.identity() is not None, timeout_s=90)
    second.start()
    wait_until("the standby serves metrics", lambda: _up(second), timeout_s=90, every_s=0.5)
    stopped_at = time.monotonic()
    first.stop()  # SIGTERM, as a rolling update or a drain sends
    wait_until(
        "the standby holds the lease",
        lambda: second.identity() is not None and holder(cluster, ns) == second.identity(),
        timeout_s=60,
        every_s=0.2,
    )
    # Released, not expired: within a couple of retries of the stop, not a lease duration.
    assert time.monotonic() - stopped_at < TAKEOVER_BOUND


def _up(replica: Replica) -> bool:
    try:
        replica.reconciles()
    except OSError:
        return False
    return True

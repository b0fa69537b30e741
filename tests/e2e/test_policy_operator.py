"""The operator enforces the policy itself (``--policy-dir``, as the chart runs it), against the
real API server with no admission policy installed: a spec within it reconciles to Ready, one
beyond it ends Stalled with reason PolicyDenied and a Warning Event, and no Job or Deployment is
created for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess
from tests.e2e.objects import condition, get, items, tiny, wait_ready
from tests.unit.policy_cases import POLICY_DATA

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def operator_with_policy(
    cluster: LocalCluster, crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    policy = tmp_path_factory.mktemp("policy")
    for key, value in POLICY_DATA.items():  # a ConfigMap volume: one file per key
        (policy / key).write_text(value)
    process = OperatorProcess(
        cluster,
        tmp_path_factory.mktemp("operator-policy"),
        extra_args=("--policy-dir", str(policy)),
    )
    process.start()
    yield process
    process.stop()


def _events(cluster: LocalCluster, ns: str, name: str) -> list[dict[str, Any]]:
    found = get(cluster, ns, "events", f"--field-selector=involvedObject.name={name}")
    return list((found or {"items": []})["items"])


def test_a_spec_within_the_policy_is_served(
    cluster: LocalCluster, operator_with_policy: OperatorProcess, e2e_namespace: str
) -> None:
    cluster.apply([tiny("within")], namespace=e2e_namespace)
    obj = wait_ready(cluster, operator_with_policy, e2e_namespace, "within")
    assert condition(obj, "Stalled").get("status") == "False"


def test_a_spec_beyond_the_policy_is_stalled_and_nothing_runs(
    cluster: LocalCluster, operator_with_policy: OperatorProcess, e2e_namespace: str
) -> None:
    ns = e2e_namespace
    greedy = tiny("greedy")
    greedy["spec"]["optimization"]["job"] = {"resources": {"limits": {"nvidia.com/gpu": 4}}}
    cluster.apply([greedy], namespace=ns)

    def stalled() -> dict[str, Any] | None:
        obj = get(cluster, ns, "om", "greedy")
        found = condition(obj, "Stalled")
        return obj if found.get("reason") == "PolicyDenied" else None

    wait_until("greedy to be Stalled by the policy", stalled, timeout_s=120)
    obj = stalled()
    assert obj is not None
    assert obj["status"]["phase"] == "Failed"
    message = condition(obj, "Stalled")["message"]
    assert message.startswith("spec.optimization.job.resources: asks for 4 GPUs"), message
    assert condition(obj, "Ready")["status"] == "False"
    wait_until(
        "a Warning Event PolicyDenied",
        lambda: [
            e
            for e in _events(cluster, ns, "greedy")
            if e["type"] == "Warning" and e["reason"] == "PolicyDenied"
        ],
        timeout_s=60,
    )
    assert items(cluster, ns, "jobs", "greedy") == []
    assert get(cluster, ns, "deployment", "greedy") is None
    assert get(cluster, ns, "configmaps", "-l", "optiserve.io/model=greedy")["items"] == []

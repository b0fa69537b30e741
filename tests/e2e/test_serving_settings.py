"""A serving-only change on the real control plane: editing ``maxQueueDelayMicroseconds`` starts
no Job, rolls the Deployment, and the new pods' real Triton serves the new config (read back
from Triton's model config endpoint), Ready.

In namespace ``local-pods`` the pod runner (not kwok) runs every pod: the optimization Job, and
the Triton Deployment's init container (``python -m optiserve.serve.assemble``) and server.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from optiserve.render.deployment import selector_string
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.kwok_config import RUN_LOCALLY_NAMESPACES
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.objects import get, items, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.triton, pytest.mark.timeout(900)]

NAME = "zeta"


@pytest.fixture(scope="module")
def local_namespace(cluster: LocalCluster) -> Iterator[str]:
    name = RUN_LOCALLY_NAMESPACES[0]
    # Another module may have used (and be deleting) the namespace: start from a fresh one.
    wait_until(
        f"namespace {name} gone",
        lambda: cluster.kubectl("get", "namespace", name).returncode != 0,
        timeout_s=180,
    )
    # The test volume binder names a claim's volume by namespace and claim; one left from the
    # namespace's earlier incarnation (Released, Retain) would keep the new claims unbound.
    for claim in ("models", "model-store"):
        cluster.kubectl("delete", "pv", f"local-{name}-{claim}", "--ignore-not-found")
    prepare_model_namespace(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s")


def model(queue_delay_us: int) -> dict[str, Any]:
    obj = tiny(NAME)
    obj["spec"]["serving"] = {
        "maxBatchSize": 8,
        "replicas": 1,
        "rolloutDeadlineSeconds": 120,
        "dynamicBatching": {"maxQueueDelayMicroseconds": queue_delay_us},
    }
    return obj


def ready_pods(cluster: LocalCluster, ns: str) -> list[dict[str, Any]]:
    def ready(pod: dict[str, Any]) -> bool:
        conditions = (pod.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    pods = (get(cluster, ns, "pods", "-l", selector_string(NAME)) or {"items": []})["items"]
    return [p for p in pods if ready(p) and not p["metadata"].get("deletionTimestamp")]


def served_queue_delay(pod: dict[str, Any]) -> int:
    url = f"http://{pod['status']['podIP']}:8000/v2/models/{NAME}/config"
    with urllib.request.urlopen(url, timeout=10) as response:
        config = json.load(response)
    return int(config["dynamic_batching"]["max_queue_delay_microseconds"])


def test_a_serving_only_edit_rolls_the_pods_without_a_job(
    cluster: LocalCluster, operator: OperatorProcess, local_namespace: str
) -> None:
    ns = local_namespace
    cluster.apply([model(500)], namespace=ns)
    first = wait_ready(cluster, operator, ns, NAME)
    digest = first["status"]["recipeDigest"]
    jobs = sorted(j["metadata"]["name"] for j in items(cluster, ns, "jobs", NAME))
    assert len(jobs) == 1
    (old_pod,) = ready_pods(cluster, ns)
    assert served_queue_delay(old_pod) == 500

    started = time.monotonic()
    cluster.apply([model(3000)], namespace=ns)
    wait_until(
        "the edit observed",
        lambda: get(cluster, ns, "om", NAME)["status"]["observedGeneration"] == 2,
        timeout_s=60,
        every_s=0.2,
    )
    # Ready for generation 2 only once the pods run the new settings (not a pass earlier).
    rolled = wait_ready(cluster, operator, ns, NAME)
    elapsed = time.monotonic() - started
    pods = ready_pods(cluster, ns)
    assert [p["metadata"]["uid"] for p in pods] != [old_pod["metadata"]["uid"]]
    assert [served_queue_delay(p) for p in pods] == [3000]
    assert rolled["status"]["recipeDigest"] == digest
    assert rolled["status"]["artifact"]["digest"] == digest
    assert sorted(j["metadata"]["name"] for j in items(cluster, ns, "jobs", NAME)) == jobs
    print(f"serving-only rollout Ready in {elapsed:.1f}s")

"""Safe by default, on the real API server: every spec it accepts reconciles or says why, once.

The operator runs with a 10-minute resync here, so whatever happens within seconds comes from
a watch (the model, its children, the optimizer's pods) and not from a periodic re-check.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.cluster_spec import FakeNode
from optiserve_testing.volume_binder import claim_manifest
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.models import write_tiny_classifier
from tests.e2e.objects import condition, get, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(900)]

# "Within seconds": the operator reacts to watch events; generous for a loaded 2-core box.
REPORT_S = 20.0
# A repair must beat the resync by far: it can only come from watching the child.
RESYNC_S = 600
REPAIR_S = 10.0
PERMANENT_REASONS = {"ChildRejected", "Forbidden", "RenderFailed", "InvalidName"}
MIG = "nvidia.com/mig-1g.10gb"


@pytest.fixture(scope="module")
def operator(
    cluster: LocalCluster, crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster, tmp_path_factory.mktemp("operator"), resync_seconds=RESYNC_S)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def ns(cluster: LocalCluster) -> Iterator[str]:
    name = f"safe-{uuid.uuid4().hex[:8]}"
    prepare_model_namespace(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def _events(cluster: LocalCluster, ns: str, name: str) -> list[dict[str, Any]]:
    found = get(cluster, ns, "events", "--field-selector", f"involvedObject.name={name}")
    return list((found or {"items": []})["items"])


def _owned_jobs(cluster: LocalCluster, ns: str, uid: str) -> list[str]:
    jobs = get(cluster, ns, "jobs") or {"items": []}
    return [
        j["metadata"]["name"]
        for j in jobs["items"]
        if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or [])
    ]


def _wait_for(
    cluster: LocalCluster,
    op: OperatorProcess,
    ns: str,
    name: str,
    what: str,
    check: Callable[[dict[str, Any]], bool],
) -> float:
    """Seconds until ``check(model)`` holds (fails the test with the operator log if never)."""
    started = time.monotonic()

    def holds() -> bool:
        obj = get(cluster, ns, "om", name)
        return bool(obj and check(obj))

    try:
        wait_until(what, holds, timeout_s=REPORT_S, every_s=0.25)
    except AssertionError:
        obj = get(cluster, ns, "om", name)
        shown = json.dumps(obj, indent=1)[-3000:]
        pytest.fail(f"{name}: {what} not within {REPORT_S}s\n{shown}\n{op.logs()}")
    return time.monotonic() - started


def _stalled(obj: dict[str, Any]) -> bool:
    stalled = condition(obj, "Stalled")
    return (
        stalled.get("status") == "True"
        and stalled.get("reason") in PERMANENT_REASONS
        and stalled.get("observedGeneration") == obj["metadata"]["generation"]
    )


def _assert_stalled_once(
    cluster: LocalCluster, op: OperatorProcess, ns: str, name: str
) -> dict[str, Any]:
    """Stalled with a reason, a message and one Warning event, and then left alone."""
    _wait_for(cluster, op, ns, name, "Stalled", _stalled)
    obj = get(cluster, ns, "om", name)
    stalled = condition(obj, "Stalled")
    assert obj["status"]["phase"] == "Failed"
    assert condition(obj, "Degraded")["status"] == "True"
    assert condition(obj, "Ready")["status"] == "False"
    message = stalled["message"]
    assert message and len(message) <= 1024 and "Traceback" not in message
    wait_until(
        "the Warning event",
        lambda: any(
            e["type"] == "Warning" and e["reason"] == stalled["reason"]
            for e in _events(cluster, ns, name)
        ),
        timeout_s=10,
        every_s=0.25,
    )
    # No retry loop: several poll periods later nothing was tried, written or said again.
    version = obj["metadata"]["resourceVersion"]
    time.sleep(5)
    again = get(cluster, ns, "om", name)
    assert again["metadata"]["resourceVersion"] == version
    warnings = [e for e in _events(cluster, ns, name) if e["reason"] == stalled["reason"]]
    assert len(warnings) == 1 and warnings[0].get("count", 1) == 1, warnings
    assert op.full_logs().count(f"{ns}/{name} stalled:") == 1
    return dict(obj)


def test_a_child_refused_by_the_api_server_stalls_at_once_and_a_retry_recovers(
    cluster: LocalCluster, operator: OperatorProcess, ns: str
) -> None:
    """A ResourceQuota that allows no Job: whatever the schema admits, the Job is refused."""
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-jobs"},
        "spec": {"hard": {"count/jobs.batch": "0"}},
    }
    cluster.apply([quota], namespace=ns)
    cluster.apply([tiny("quota")], namespace=ns)
    obj = _assert_stalled_once(cluster, operator, ns, "quota")
    stalled = condition(obj, "Stalled")
    assert stalled["reason"] == "Forbidden"
    assert "exceeded quota" in stalled["message"] and "create Job quota-opt-" in stalled["message"]
    assert _owned_jobs(cluster, ns, obj["metadata"]["uid"]) == []

    # The administrator lifts the quota; the user asks for another try (same spec).
    cluster.kubectl("delete", "-n", ns, "resourcequota", "no-jobs", check=True)
    cluster.kubectl(
        "annotate", "-n", ns, "om", "quota", "optiserve.io/retry=1", "--overwrite", check=True
    )
    ready = wait_ready(cluster, operator, ns, "quota")
    assert condition(ready, "Stalled")["status"] == "False"
    assert len(_owned_jobs(cluster, ns, ready["metadata"]["uid"])) == 1


def _case(name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    obj = tiny(name)
    change(obj)
    return obj


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return change


# The cases of issue 14 that used to stay "Pending" or "Optimizing" forever.
ISSUE_CASES: dict[str, dict[str, Any]] = {
    "garbage-cpu": _case(
        "garbage-cpu", _set("spec.optimization.job.resources", {"limits": {"cpu": "lots"}})
    ),
    "negative-gpu": _case(
        "negative-gpu", _set("spec.optimization.job.resources", {"limits": {"nvidia.com/gpu": -1}})
    ),
    "bad-toleration": _case(
        "bad-toleration",
        _set(
            "spec.optimization.job.tolerations",
            [{"key": "dedicated", "operator": "Exists", "value": "ml"}],
        ),
    ),
    "autoscaling-fast": _case(
        "autoscaling-fast", _set("spec.serving.autoscaling", {"target": "fast"})
    ),
    "long-name": tiny("a" * 70),
    "empty-image": _case("empty-image", _set("spec.serving.image", "")),
    "bad-selector-key": _case(
        "bad-selector-key", _set("spec.serving.nodeSelector", {"bad key!": "x"})
    ),
    "dotted-name": tiny("my.model"),
    "digit-name": tiny("1model"),
}


@pytest.mark.parametrize("case", list(ISSUE_CASES))
def test_every_accepted_spec_of_the_issue_stalls_with_a_reason_or_is_refused(
    cluster: LocalCluster, operator: OperatorProcess, ns: str, case: str
) -> None:
    obj = ISSUE_CASES[case]
    name = obj["metadata"]["name"]
    applied = cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(obj))
    if applied.returncode != 0:
        # Refused at admission (the schema or a policy): as safe, and said at once.
        assert "invalid" in applied.stderr.lower() or "denied" in applied.stderr.lower()
        return
    model = _assert_stalled_once(cluster, operator, ns, name)
    # Refused before the hour-long Job, not after it.
    assert _owned_jobs(cluster, ns, model["metadata"]["uid"]) == []


def test_a_job_pod_mounting_a_missing_claim_says_why_and_recovers_when_it_appears(
    cluster: LocalCluster, operator: OperatorProcess, ns: str
) -> None:
    claim = "late-claim"
    obj = tiny("late")
    obj["spec"]["source"]["uri"] = f"pvc://{claim}/tiny.onnx"
    cluster.apply([obj], namespace=ns)

    def unschedulable(model: dict[str, Any]) -> bool:
        degraded = condition(model, "Degraded")
        return degraded.get("status") == "True" and degraded.get("reason") == "Unschedulable"

    _wait_for(cluster, operator, ns, "late", "Degraded=Unschedulable", unschedulable)
    model = get(cluster, ns, "om", "late")
    assert model["status"]["phase"] == "Pending"
    message = condition(model, "Degraded")["message"]
    assert f'persistentvolumeclaim "{claim}" not found' in message, message
    assert any(
        e["type"] == "Warning" and e["reason"] == "Unschedulable"
        for e in _events(cluster, ns, "late")
    )

    # The claim appears with the model in it: the same Job's pod is scheduled and runs.
    cluster.apply([claim_manifest(claim)], namespace=ns)
    write_tiny_classifier(cluster.pvc_root / ns / claim)
    ready = wait_ready(cluster, operator, ns, "late")
    assert condition(ready, "Degraded")["status"] == "False"
    assert len(_owned_jobs(cluster, ns, ready["metadata"]["uid"])) == 1


def _uid(cluster: LocalCluster, ns: str, kind: str, name: str) -> str | None:
    found = get(cluster, ns, kind, name)
    return None if found is None else str(found["metadata"]["uid"])


def test_deleted_or_edited_children_are_repaired_within_seconds(
    cluster: LocalCluster, operator: OperatorProcess, ns: str
) -> None:
    cluster.apply([tiny("repair")], namespace=ns)
    wait_ready(cluster, operator, ns, "repair")
    for kind in ("service", "deployment"):
        old = _uid(cluster, ns, kind, "repair")
        started = time.monotonic()
        cluster.kubectl("delete", "-n", ns, kind, "repair", check=True)

        def recreated(kind: str = kind, old: str | None = old) -> bool:
            return _uid(cluster, ns, kind, "repair") not in (None, old)

        wait_until(f"the {kind} back", recreated, timeout_s=REPAIR_S, every_s=0.2)
        assert time.monotonic() - started < REPAIR_S

    patch = json.dumps({"spec": {"selector": {"optiserve.io/model": "someone-else"}}})
    cluster.kubectl("patch", "-n", ns, "service", "repair", "-p", patch, check=True)
    wait_until(
        "the Service selector restored",
        lambda: (
            get(cluster, ns, "service", "repair")["spec"]["selector"].get("optiserve.io/model")
            == "repair"
        ),
        timeout_s=REPAIR_S,
        every_s=0.2,
    )


@pytest.fixture
def mig_node(cluster: LocalCluster) -> Iterator[str]:
    node = FakeNode("gpu-mig").manifest()
    status = node["status"]
    assert isinstance(status, dict)
    capacity = {**status["capacity"], MIG: "7"}  # a MIG slice, and no whole GPU
    node["status"] = {"capacity": capacity, "allocatable": capacity}
    cluster.apply([node])
    # The scheduler sees the capacity once the node status carries it.
    wait_until(
        "the MIG node's capacity",
        lambda: (
            (get(cluster, "default", "node", "gpu-mig") or {})
            .get("status", {})
            .get("allocatable", {})
            .get(MIG)
            == "7"
        ),
        timeout_s=60,
    )
    yield "gpu-mig"
    cluster.kubectl("delete", "node", "gpu-mig", "--wait=false")


def test_a_mig_slice_is_the_only_gpu_resource_asked_for_and_lands_on_the_mig_node(
    cluster: LocalCluster, operator: OperatorProcess, ns: str, mig_node: str
) -> None:
    obj = tiny("mig")
    obj["spec"]["optimization"]["target"] = {"device": "gpu"}
    obj["spec"]["optimization"]["job"] = {"resources": {"limits": {MIG: 1}}}
    obj["spec"]["serving"]["resources"] = {"limits": {MIG: 1}}
    cluster.apply([obj], namespace=ns)
    uid = get(cluster, ns, "om", "mig")["metadata"]["uid"]
    wait_until("the Job", lambda: _owned_jobs(cluster, ns, uid), timeout_s=REPORT_S)
    job = get(cluster, ns, "job", _owned_jobs(cluster, ns, uid)[0])
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"][MIG] == "1"
    asked = {name for part in resources.values() for name in part}
    assert "nvidia.com/gpu" not in asked  # only the slice (CPU and memory have defaults)

    def on_the_mig_node() -> bool:
        pods = get(cluster, ns, "pods", "-l", "optiserve.io/model=mig") or {"items": []}
        return any(p["spec"].get("nodeName") == mig_node for p in pods["items"])

    # With a whole GPU asked for besides, no node would fit (the MIG node has no
    # nvidia.com/gpu, the GPU nodes have no MIG slices).
    wait_until("the optimizer pod on the MIG node", on_the_mig_node, timeout_s=60)
    cluster.kubectl("delete", "-n", ns, "om", "mig", "--wait=false")


def test_a_deterministic_optimizer_failure_ends_the_job_after_one_pod(
    cluster: LocalCluster, operator: OperatorProcess, ns: str
) -> None:
    obj = tiny("once")
    obj["spec"]["source"]["uri"] = "pvc://models/missing.onnx"  # exit 2: the user's to fix
    cluster.apply([obj], namespace=ns)

    def failed(model: dict[str, Any]) -> bool:
        return condition(model, "Degraded").get("reason") == "OptimizationFailed"

    wait_until(
        "Degraded=OptimizationFailed",
        lambda: failed(get(cluster, ns, "om", "once") or {}),
        timeout_s=180,
    )
    model = get(cluster, ns, "om", "once")
    assert "exit code 2" in condition(model, "Degraded")["message"]
    (name,) = _owned_jobs(cluster, ns, model["metadata"]["uid"])
    job = get(cluster, ns, "job", name)
    # backoffLimit is 1, yet the podFailurePolicy failed the Job on its first pod.
    assert job["spec"]["backoffLimit"] == 1
    assert job["status"].get("failed") == 1
    reasons = {c["type"]: c.get("reason") for c in job["status"].get("conditions") or []}
    assert reasons.get("Failed") == "PodFailurePolicy", reasons
    pods = get(cluster, ns, "pods", "-l", f"job-name={name}") or {"items": []}
    assert len(pods["items"]) == 1


def test_the_progress_log_read_is_a_request_the_api_server_forwards(
    cluster: LocalCluster, ns: str
) -> None:
    """``Kube.pod_log`` (bounded tail, container named) is accepted and sent to the node.

    The harness has no kubelet log endpoint (kwok plays the nodes), so the read ends in the
    API server's 500 about the node, fast; what must not happen is the API server refusing
    the request itself (a 406 for a text/plain Accept, a 400 for a bad query).
    """
    from optiserve_operator.kube import Kube
    from optiserve_operator.kube_transport import KubeError

    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "logged"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "optimizer", "image": "x", "command": ["sleep", "30"]}],
                }
            }
        },
    }
    cluster.apply([job], namespace=ns)

    def running_pod() -> str | None:
        pods = get(cluster, ns, "pods", "-l", "job-name=logged") or {"items": []}
        return next(
            (p["metadata"]["name"] for p in pods["items"] if p["status"].get("phase") == "Running"),
            None,
        )

    wait_until("the pod running", running_pod, timeout_s=60)
    pod = running_pod()
    assert pod is not None
    kube = Kube.from_environment(str(cluster.kubeconfig))
    started = time.monotonic()
    try:
        kube.pod_log(ns, pod, "optimizer")
    except KubeError as err:
        assert err.status == 500 and "containerLogs" in err.message, err
        assert "tailLines=200" in err.message and "limitBytes=32768" in err.message
    assert time.monotonic() - started < 5
    cluster.kubectl("delete", "-n", ns, "job", "logged", "--wait=false")

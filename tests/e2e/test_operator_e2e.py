"""The operator end to end: a real kube-apiserver, controller-manager, scheduler and kwok nodes
(optiserve_testing), the real operator process, and the real optimizer run by the pod runner."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import yaml

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess
from tests.e2e.objects import condition, get, items, served_digest, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(900)]


def test_invalid_model_is_refused_by_the_api_server_naming_the_field(
    cluster: LocalCluster, crd: None, e2e_namespace: str
) -> None:
    bad = tiny("bad")
    bad["spec"]["optimization"]["quantization"] = {"precision": "int8", "method": "static"}
    result = cluster.kubectl("apply", "-n", e2e_namespace, "-f", "-", input=yaml.safe_dump(bad))
    assert result.returncode != 0
    assert "calibration" in result.stderr


def test_apply_optimizes_serves_and_an_unchanged_reapply_does_nothing(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str
) -> None:
    ns = e2e_namespace
    cluster.apply([tiny("alpha")], namespace=ns)
    obj = wait_ready(cluster, operator, ns, "alpha")

    status = obj["status"]
    digest = status["recipeDigest"]
    assert status["phase"] == "Ready"
    assert status["artifact"]["digest"] == digest
    # The model's own folder of the store: <subPath>/<namespace>/<name>/<digest>.
    assert status["artifact"]["uri"].startswith(f"pvc://model-store/optiserve/{ns}/alpha/{digest}/")
    assert status["metrics"]["speedup"].endswith("x")
    assert status["endpoint"] == f"http://alpha.{ns}.svc:8000"
    assert {c["type"] for c in status["conditions"]} >= {
        "Ready",
        "Optimized",
        "Progressing",
        "Degraded",
    }
    assert all(
        c["observedGeneration"] == obj["metadata"]["generation"] for c in status["conditions"]
    )

    jobs = items(cluster, ns, "jobs", "alpha")
    assert [j["metadata"]["name"] for j in jobs] == [f"alpha-opt-{digest[:10]}"]
    pod = jobs[0]["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod  # a cpu target
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True

    deployment = get(cluster, ns, "deployment", "alpha")
    template = deployment["spec"]["template"]["spec"]
    folder = f"optiserve/{ns}/alpha/{digest}/model_repository"
    # Triton serves what the init container assembles from the artifact and the spec.
    assert "--model-repository=/models" in template["containers"][0]["args"]
    assert f"--artifact=/mnt/pvc/model-store/{folder}" in template["initContainers"][0]["command"]
    # Triton sees its artifact only, read-only; the Job only the model's own folder writable.
    (mount,) = [
        m
        for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m.get("subPath")
    ]
    assert (mount["subPath"], mount["readOnly"]) == (folder, True)
    writable = [
        m for m in pod["containers"][0]["volumeMounts"] if not m.get("readOnly") and "subPath" in m
    ]
    assert [m["subPath"] for m in writable] == [f"optiserve/{ns}/alpha"]
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert get(cluster, ns, "service", "alpha")["spec"]["ports"][0]["port"] == 8000

    columns = cluster.kubectl("get", "-n", ns, "om", "alpha", check=True).stdout
    assert "Ready" in columns.splitlines()[1] and "fp32" in columns and "True" in columns

    # An unchanged re-apply: no new Job, no new Deployment generation, no status change.
    before = (deployment["metadata"]["generation"], status)
    cluster.apply([tiny("alpha")], namespace=ns)
    time.sleep(5)  # several reconcile passes (poll 1s)
    again = get(cluster, ns, "om", "alpha")
    assert (
        get(cluster, ns, "deployment", "alpha")["metadata"]["generation"],
        again["status"],
    ) == before
    assert len(items(cluster, ns, "jobs", "alpha")) == 1


def test_spec_change_runs_a_new_job_and_rolls_the_deployment(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str
) -> None:
    ns = e2e_namespace
    cluster.apply([tiny("beta")], namespace=ns)
    first = wait_ready(cluster, operator, ns, "beta")
    old_digest = first["status"]["recipeDigest"]

    changed = tiny("beta")
    changed["spec"]["optimization"]["accuracy"]["maxDrop"] = 0.04
    cluster.apply([changed], namespace=ns)
    wait_until(
        "a new recipe digest",
        lambda: get(cluster, ns, "om", "beta")["status"].get("recipeDigest") != old_digest,
        timeout_s=60,
    )
    second = wait_ready(cluster, operator, ns, "beta")
    new_digest = second["status"]["recipeDigest"]
    assert second["metadata"]["generation"] == first["metadata"]["generation"] + 1
    assert served_digest(cluster, ns, "beta") == new_digest
    names = sorted(j["metadata"]["name"] for j in items(cluster, ns, "jobs", "beta"))
    assert names == sorted([f"beta-opt-{old_digest[:10]}", f"beta-opt-{new_digest[:10]}"])
    assert second["status"]["lastGoodArtifact"]["digest"] == new_digest


def test_a_failing_job_degrades_and_leaves_the_deployment_alone(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str
) -> None:
    ns = e2e_namespace
    cluster.apply([tiny("gamma")], namespace=ns)
    good = wait_ready(cluster, operator, ns, "gamma")
    good_digest = good["status"]["recipeDigest"]

    broken = tiny("gamma")
    broken["spec"]["source"]["uri"] = "pvc://models/missing.onnx"
    cluster.apply([broken], namespace=ns)

    def degraded() -> bool:
        return condition(get(cluster, ns, "om", "gamma"), "Degraded").get("status") == "True"

    wait_until("Degraded=True", degraded, timeout_s=240)
    obj = get(cluster, ns, "om", "gamma")
    cond = condition(obj, "Degraded")
    assert cond["reason"] == "OptimizationFailed"
    assert "missing.onnx" in cond["message"] or "exit code" in cond["message"]
    assert obj["status"]["phase"] == "Failed"
    assert served_digest(cluster, ns, "gamma") == good_digest
    jobs_now = len(items(cluster, ns, "jobs", "gamma"))
    time.sleep(6)  # several poll periods: no retry storm
    assert len(items(cluster, ns, "jobs", "gamma")) == jobs_now == 2
    events = get(cluster, ns, "events", "--field-selector", "involvedObject.name=gamma")
    assert any(
        e["reason"] == "OptimizationFailed" and e["type"] == "Warning" for e in events["items"]
    )


def _job_succeeded(cluster: LocalCluster, ns: str, name: str) -> bool:
    return any(j.get("status", {}).get("succeeded") for j in items(cluster, ns, "jobs", name))


# Where the operator is killed: after it created the Job, once the Job has finished (before
# or after the status was written), and once the Deployment exists but is not yet Ready.
KILL_POINTS: dict[str, Callable[[LocalCluster, str, str], bool]] = {
    "job-created": lambda c, ns, n: len(items(c, ns, "jobs", n)) == 1,
    "job-succeeded": _job_succeeded,
    "deployment-created": lambda c, ns, n: len(items(c, ns, "deployments", n)) == 1,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_operator_restarts_without_duplicates(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str, point: str
) -> None:
    ns, name = e2e_namespace, f"delta-{point}"
    cluster.apply([tiny(name)], namespace=ns)
    reached = KILL_POINTS[point]
    wait_until(point, lambda: reached(cluster, ns, name), timeout_s=120, every_s=0.2)
    operator.kill()
    operator.start()
    wait_ready(cluster, operator, ns, name)
    assert len(items(cluster, ns, "jobs", name)) == 1
    assert len(items(cluster, ns, "configmaps", name)) == 1
    assert len(items(cluster, ns, "deployments", name)) == 1
    assert len(items(cluster, ns, "services", name)) == 1


def test_gpu_target_job_asks_for_a_gpu_of_the_product(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str
) -> None:
    ns = e2e_namespace
    gpu = tiny("epsilon")
    gpu["spec"]["optimization"]["target"] = {"device": "gpu", "gpuProduct": "NVIDIA-L4"}
    cluster.apply([gpu], namespace=ns)
    wait_until("the Job", lambda: len(items(cluster, ns, "jobs", "epsilon")) == 1, timeout_s=60)
    pod_spec = items(cluster, ns, "jobs", "epsilon")[0]["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}

    def scheduled_on_l4() -> bool:
        pods = get(cluster, ns, "pods", "-l", "optiserve.io/model=epsilon") or {"items": []}
        return any(p["spec"].get("nodeName") == "gpu-l4" for p in pods["items"])

    wait_until("the optimizer pod on the L4 node", scheduled_on_l4, timeout_s=60)


def test_delete_removes_every_child(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str
) -> None:
    ns = e2e_namespace
    cluster.apply([tiny("zeta")], namespace=ns)
    wait_ready(cluster, operator, ns, "zeta")
    cluster.kubectl("delete", "-n", ns, "om", "zeta", "--wait=true", check=True)

    def gone() -> bool:
        return not any(
            items(cluster, ns, kind, "zeta")
            for kind in ("jobs", "deployments", "services", "configmaps")
        )

    wait_until("children garbage-collected", gone, timeout_s=120)


def test_delete_with_keep_artifacts_false_removes_the_artifact_folder(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str
) -> None:
    ns = e2e_namespace
    model = tiny("eta")
    model["spec"]["optimization"]["benchmark"]["iterations"] = 4  # a digest of its own
    model["spec"]["storage"] = {"pvc": "model-store", "keepArtifactsOnDelete": False}
    cluster.apply([model], namespace=ns)
    obj = wait_ready(cluster, operator, ns, "eta")
    assert "optiserve.io/artifacts" in obj["metadata"]["finalizers"]
    digest = obj["status"]["recipeDigest"]
    own = cluster.pvc_root / ns / "model-store" / "optiserve" / ns / obj["metadata"]["name"]
    folder = own / digest  # in the model's own folder
    assert folder.is_dir()
    cluster.kubectl("delete", "-n", ns, "om", "eta", "--wait=false", check=True)
    wait_until("the model gone", lambda: get(cluster, ns, "om", "eta") is None, timeout_s=180)
    assert not folder.exists()

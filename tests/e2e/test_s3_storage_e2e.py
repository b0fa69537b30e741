"""Issue 16, artifacts in S3 (``storage.s3``): an OptimizedModel whose artifacts live under an
S3 prefix of a real SeaweedFS, with no storage claim at all, reaches Ready with a real Triton
pod serving the artifact its init container pulled (checked against the completion marker);
deleting it with ``keepArtifactsOnDelete: false`` removes the objects. No credential appears
in anything a user can read.

Runs in the ``local-pods`` namespace, where the pod runner runs Triton's pods too (their
readiness probe passes only once the model is loaded).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from optiserve.remote.artifacts import is_complete
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.kwok_config import RUN_LOCALLY_NAMESPACES
from optiserve_testing.s3server import S3Server
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.objects import get, served_digest, tiny, wait_ready
from tests.e2e.test_object_storage_e2e import (
    everything_the_user_sees,
    secret,
    tiny_model_in_s3,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster,
    pytest.mark.triton,
    pytest.mark.s3,
    pytest.mark.timeout(900),
]

NAME = "s3-stored"
WRITER_SECRET = "artifact-writer"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with tiny_model_in_s3(tmp_path_factory, ["models", "artifacts"]) as server:
        yield server


@pytest.fixture(scope="module")
def namespace(cluster: LocalCluster, s3: S3Server, operator: OperatorProcess) -> Iterator[str]:
    # After the operator in teardown: a model left behind waits on its finalizer.
    name = RUN_LOCALLY_NAMESPACES[0]
    wait_until(
        f"namespace {name} gone",
        lambda: cluster.kubectl("get", "namespace", name).returncode != 0,
        timeout_s=120,
    )
    prepare_model_namespace(cluster, name)
    writer = secret(WRITER_SECRET, s3.admin.access_key, s3.admin.secret_key)
    cluster.apply([writer], namespace=name)
    yield name
    # The model first, while the namespace still admits its cleanup Job (a terminating
    # namespace refuses new objects, so the finalizer would wait on a Job never created).
    cluster.kubectl("delete", "-n", name, "om", "--all", "--wait=true", "--timeout=180s")
    cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s")


def model(s3: S3Server) -> dict[str, Any]:
    obj = tiny(NAME)
    obj["spec"]["source"] = {"uri": "s3://models/tiny/tiny.onnx"}
    obj["spec"]["optimization"]["accuracy"]["dataset"] = "s3://models/data/eval.npz"
    obj["spec"]["serving"] = {"maxBatchSize": 8, "replicas": 1, "rolloutDeadlineSeconds": 120}
    obj["spec"]["storage"] = {"s3": "s3://artifacts/prod", "keepArtifactsOnDelete": False}
    obj["spec"]["objectStore"] = {
        "endpoint": s3.endpoint,
        "addressing": "path",
        "credentialsSecret": WRITER_SECRET,
    }
    return obj


def ready_pod(cluster: LocalCluster, ns: str) -> dict[str, Any]:
    pods = get(
        cluster, ns, "pods", "-l", f"optiserve.io/model={NAME},app.kubernetes.io/component=server"
    )
    for pod in (pods or {"items": []})["items"]:
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return dict(pod)
    raise AssertionError(f"no Ready Triton pod of {NAME}")


def test_an_artifact_kept_in_s3_is_pulled_served_and_removed_with_the_model(
    cluster: LocalCluster, operator: OperatorProcess, namespace: str, s3: S3Server
) -> None:
    ns = namespace
    cluster.apply([model(s3)], namespace=ns)
    ready = wait_ready(cluster, operator, ns, NAME)
    digest = ready["status"]["recipeDigest"]
    assert served_digest(cluster, ns, NAME) == digest
    uri = ready["status"]["artifact"]["uri"]
    assert uri == f"s3://artifacts/prod/{ns}/{NAME}/{digest}/model_repository"
    prefix = f"prod/{ns}/{NAME}/{digest}"
    assert is_complete(s3.client(), "artifacts", prefix)

    # Served from the pulled copy: no claim in the Triton pod, and Triton has the model.
    pod_spec = get(cluster, ns, "deployment", NAME)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod_spec["initContainers"]] == ["artifact-pull", "serving-config"]
    assert not [v for v in pod_spec["volumes"] if "persistentVolumeClaim" in v]
    pod = ready_pod(cluster, ns)
    runner = cluster.pod_runner
    assert runner is not None  # the pod runner really ran the pod's containers here
    pull_log = runner.logs(ns, pod["metadata"]["name"], "artifact-pull")
    assert f"pulled s3://artifacts/{prefix} into" in pull_log
    url = f"http://{pod['status']['podIP']}:8000/v2/models/{NAME}/config"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert json.load(response)["name"] == NAME
    # Nothing was written to the claim that would otherwise hold artifacts.
    assert not (cluster.pvc_root / ns / "model-store" / "optiserve" / ns / NAME).exists()

    seen = everything_the_user_sees(cluster, ns)
    assert s3.admin.secret_key not in seen

    cluster.kubectl("delete", "-n", ns, "om", NAME, "--wait=false", check=True)
    wait_until("the model gone", lambda: get(cluster, ns, "om", NAME) is None, timeout_s=180)
    assert list(s3.client().list("artifacts", f"prod/{ns}/{NAME}/")) == []

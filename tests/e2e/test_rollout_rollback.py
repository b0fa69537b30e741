"""A rollout that never becomes Ready is rolled back, the good version keeps serving, and fixing
the spec recovers, with real Triton pods.

In namespace ``local-pods`` the pod runner (not kwok) runs every pod, so the operator's Triton
Deployment runs real local servers whose readiness probe only passes once the model is loaded.
The broken version is a real optimizer artifact whose model file is damaged after the Job
wrote it: it stands for an artifact the serving image cannot load (a version mismatch, a
corrupted volume). Its pods never become Ready; after ``rolloutDeadlineSeconds`` the operator
must serve the last good artifact again, say why in ``Degraded``, and recover on its own once
a fixed spec arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optiserve.api import OptimizedModel
from optiserve.render.job import artifact_uri
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.kwok_config import RUN_LOCALLY_NAMESPACES
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess, prepare_model_namespace
from tests.e2e.objects import condition, get, served_digest, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.triton, pytest.mark.timeout(900)]

NAME = "epsilon"
DEADLINE_S = 30  # the smallest rolloutDeadlineSeconds the API accepts


@pytest.fixture(scope="module")
def local_namespace(cluster: LocalCluster) -> Iterator[str]:
    name = RUN_LOCALLY_NAMESPACES[0]
    prepare_model_namespace(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def model(max_drop: float) -> dict[str, Any]:
    obj = tiny(NAME)
    obj["spec"]["serving"] = {
        "maxBatchSize": 8,
        "replicas": 1,
        "rolloutDeadlineSeconds": DEADLINE_S,
    }
    obj["spec"]["optimization"]["accuracy"]["maxDrop"] = max_drop
    return obj


def artifact_folder(
    cluster: LocalCluster, namespace: str, obj: dict[str, Any], digest: str
) -> Path:
    model = OptimizedModel.model_validate(obj)
    uri = artifact_uri(model.spec, digest, namespace=namespace, name=model.metadata.name)
    return cluster.claim_path(namespace, uri)


def damage_when_written(folder: Path, stop: threading.Event) -> None:
    """Overwrite every model file of the artifact as soon as the optimizer renamed it in place."""
    while not stop.wait(0.05):
        models = list(folder.glob("*/1/model.onnx"))
        if models:
            for path in models:
                path.write_bytes(b"not an ONNX model")
            return


def test_unready_rollout_rolls_back_and_a_fixed_spec_recovers(
    cluster: LocalCluster, operator: OperatorProcess, local_namespace: str
) -> None:
    ns = local_namespace
    cluster.apply([model(0.05)], namespace=ns)
    good = wait_ready(cluster, operator, ns, NAME)
    good_digest = good["status"]["recipeDigest"]
    assert served_digest(cluster, ns, NAME) == good_digest

    broken = model(0.04)
    cluster.apply([broken], namespace=ns)
    wait_until(
        "the new recipe digest",
        lambda: get(cluster, ns, "om", NAME)["status"].get("recipeDigest") != good_digest,
        timeout_s=60,
        every_s=0.1,
    )
    broken_digest = get(cluster, ns, "om", NAME)["status"]["recipeDigest"]
    stop = threading.Event()
    damage = threading.Thread(
        target=damage_when_written,
        args=(artifact_folder(cluster, ns, broken, broken_digest), stop),
        daemon=True,
    )
    damage.start()
    try:
        wait_until(
            "rolled back",
            lambda: (
                condition(get(cluster, ns, "om", NAME), "Degraded").get("reason") == "RolledBack"
            ),
            timeout_s=300,
        )
    except AssertionError:
        described = cluster.kubectl("describe", "-n", ns, "om,deploy,rs,pod").stdout
        pytest.fail(f"never rolled back\n{described[-8000:]}\n{operator.logs()[-4000:]}")
    finally:
        stop.set()
    obj = get(cluster, ns, "om", NAME)
    degraded = condition(obj, "Degraded")
    assert degraded["status"] == "True"
    assert broken_digest[:12] in degraded["message"] and good_digest[:12] in degraded["message"]
    assert f"{DEADLINE_S}s" in degraded["message"]
    assert served_digest(cluster, ns, NAME) == good_digest
    assert obj["status"]["lastGoodArtifact"]["digest"] == good_digest
    deployment = get(cluster, ns, "deployment", NAME)
    assert deployment["status"].get("readyReplicas") == 1  # the good pod served throughout

    fixed = model(0.03)
    cluster.apply([fixed], namespace=ns)
    recovered = wait_ready(cluster, operator, ns, NAME)
    assert recovered["status"]["recipeDigest"] not in (good_digest, broken_digest)
    assert served_digest(cluster, ns, NAME) == recovered["status"]["recipeDigest"]
    assert condition(recovered, "Degraded").get("status") == "False"

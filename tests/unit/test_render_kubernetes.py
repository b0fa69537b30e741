"""The Job, Deployment and Service renderers: golden files plus the rules that must hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from optiserve.api import OptimizedModel, OptimizedModelSpec
from optiserve.api.status import Artifact
from optiserve.render.deployment import (
    ArtifactLocationError,
    render_deployment,
    render_service,
    selector_string,
)
from optiserve.render.job import (
    artifact_uri,
    render_cleanup_job,
    render_job,
    render_spec_config_map,
)
from optiserve.render.kubernetes import Owner, job_name

from .golden_files import check_golden_manifest

GOLDEN = Path(__file__).parent / "golden"
DIGEST = "3f5a9c0e7b1d2468ace013579bdf2468ace013579bdf2468ace013579bdf2468"
OWNER = Owner(name="minilm", namespace="ml", uid="0b8e3a52-1111-2222-3333-444455556666")
IMAGE = "ghcr.io/optiserve/optimizer:0.1.0"

GPU_MODEL: dict[str, Any] = {
    "apiVersion": "optiserve.io/v1alpha1",
    "kind": "OptimizedModel",
    "metadata": {"name": "minilm", "namespace": "ml"},
    "spec": {
        "source": {"uri": "pvc://models/minilm.onnx"},
        "optimization": {
            "target": {"device": "gpu", "gpuProduct": "NVIDIA-A100-SXM4-80GB"},
            "quantization": {
                "precision": "int8",
                "method": "static",
                "calibration": {"uri": "pvc://data/calib.npz"},
            },
            "accuracy": {"dataset": "pvc://data/eval.npz", "metric": "cosine"},
            "job": {"tolerations": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]},
        },
        "serving": {
            "replicas": 2,
            "responseCache": {"enabled": True, "sizeBytes": 1048576},
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
        },
        "storage": {"pvc": "model-store", "subPath": "artifacts"},
    },
}
CPU_MODEL: dict[str, Any] = {
    "apiVersion": "optiserve.io/v1alpha1",
    "kind": "OptimizedModel",
    "metadata": {"name": "digits", "namespace": "default"},
    "spec": {
        "source": {"uri": "pvc://models/digits.onnx"},
        "optimization": {"accuracy": {"dataset": "pvc://models/eval.npz"}},
        "serving": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
        "storage": {"pvc": "model-store"},
    },
}
CPU_OWNER = Owner(name="digits", namespace="default", uid="uid-digits")


def spec_of(obj: dict[str, Any]) -> OptimizedModelSpec:
    return OptimizedModel.model_validate(obj).spec


def artifact_for(spec: OptimizedModelSpec, owner: Owner = OWNER) -> Artifact:
    uri = artifact_uri(spec, DIGEST, namespace=owner.namespace, name=owner.name)
    return Artifact(digest=DIGEST, uri=uri, precision="int8")


def check_golden(name: str, manifest: dict[str, Any]) -> None:
    check_golden_manifest(GOLDEN / name, manifest)


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def test_gpu_job_matches_golden() -> None:
    check_golden("job-gpu.yaml", render_job(OWNER, spec_of(GPU_MODEL), DIGEST, image=IMAGE))


def test_cpu_job_matches_golden() -> None:
    job = render_job(CPU_OWNER, spec_of(CPU_MODEL), DIGEST, image=IMAGE)
    check_golden("job-cpu.yaml", job)


def test_gpu_deployment_and_service_match_golden() -> None:
    spec = spec_of(GPU_MODEL)
    check_golden("deployment-gpu.yaml", render_deployment(OWNER, spec, artifact_for(spec)))
    check_golden("service.yaml", render_service(OWNER))


def test_job_name_is_deterministic_short_and_changes_only_with_digest_or_retry() -> None:
    assert job_name("minilm", DIGEST) == "minilm-opt-3f5a9c0e7b"
    assert job_name("minilm", DIGEST) == job_name("minilm", DIGEST)
    assert job_name("minilm", "0" * 64) != job_name("minilm", DIGEST)
    retried = job_name("minilm", DIGEST, retry="1")
    assert retried.startswith("minilm-opt-3f5a9c0e7b-") and retried != job_name("minilm", DIGEST)
    long_name = "a" * 63
    for retry in ("", "again"):
        name = job_name(long_name, DIGEST, retry)
        assert len(name) <= 63 and not name.startswith("-")


def test_gpu_job_requests_a_gpu_on_the_target_product_and_tolerates_the_taint() -> None:
    job = render_job(OWNER, spec_of(GPU_MODEL), DIGEST, image=IMAGE)
    pod = pod_spec(job)
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    keys = [t.get("key") for t in pod["tolerations"]]
    assert keys == ["dedicated", "nvidia.com/gpu"]


def test_cpu_job_has_no_gpu_request_selector_or_toleration() -> None:
    pod = pod_spec(render_job(CPU_OWNER, spec_of(CPU_MODEL), DIGEST, image=IMAGE))
    resources = pod["containers"][0]["resources"]
    assert not any("/" in name for kind in resources.values() for name in kind), resources
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_job_mounts_inputs_read_only_and_only_its_own_folder_of_the_store_writable() -> None:
    pod = pod_spec(render_job(OWNER, spec_of(GPU_MODEL), DIGEST, image=IMAGE))
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    own = "/mnt/pvc/model-store/artifacts/ml/minilm"
    assert mounts[own]["readOnly"] is False
    assert mounts[own]["subPath"] == "artifacts/ml/minilm"
    # Nothing else of the store: not the claim's root, not another model's folder.
    assert not [p for p in mounts if p.startswith("/mnt/pvc/model-store") and p != own]
    assert mounts["/mnt/pvc/models"]["readOnly"] is True
    assert mounts["/mnt/pvc/data"]["readOnly"] is True
    assert "subPath" not in mounts["/mnt/pvc/models"]
    assert mounts["/tmp"]["name"] == "tmp"
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims[mounts[own]["name"]] == {"claimName": "model-store", "readOnly": False}
    for path in ("/mnt/pvc/models", "/mnt/pvc/data"):
        assert claims[mounts[path]["name"]]["readOnly"] is True
    command = pod["containers"][0]["command"]
    assert command == ["optiserve", "optimize", "/etc/optiserve/spec.yaml", "--out", own]


def test_two_models_on_one_store_write_to_separate_folders() -> None:
    spec = spec_of(GPU_MODEL)
    other = Owner(name="minilm-2", namespace="ml", uid="u2")
    folders = set()
    for owner in (OWNER, other):
        pod = pod_spec(render_job(owner, spec, DIGEST, image=IMAGE))
        (store,) = [m for m in pod["containers"][0]["volumeMounts"] if m.get("readOnly") is False]
        folders.add(store["subPath"])
        assert pod["containers"][0]["command"][-1] == store["mountPath"]
    assert folders == {"artifacts/ml/minilm", "artifacts/ml/minilm-2"}
    uri = artifact_uri(spec, DIGEST, namespace="ml", name="minilm")
    assert uri == f"pvc://model-store/artifacts/ml/minilm/{DIGEST}/model_repository"


def test_triton_mounts_only_its_artifact_read_only() -> None:
    spec = spec_of(GPU_MODEL)
    pod = pod_spec(render_deployment(OWNER, spec, artifact_for(spec)))
    (claim_volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claim_volume["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
    (mount,) = [
        m for m in pod["containers"][0]["volumeMounts"] if m["name"] == claim_volume["name"]
    ]
    assert mount["readOnly"] is True
    assert mount["subPath"] == f"artifacts/ml/minilm/{DIGEST}/model_repository"
    # Triton serves the folder the init container assembles from that mount (same path there).
    (init,) = pod["initContainers"]
    assert mount in init["volumeMounts"]
    assert f"--artifact={mount['mountPath']}" in init["command"]
    assert "--model-repository=/models" in pod["containers"][0]["args"]


@pytest.mark.parametrize(
    "uri", ["pvc://model-store/a/../b/model_repository", "pvc://model-store/./model_repository"]
)
def test_an_artifact_path_with_dot_segments_is_not_served(uri: str) -> None:
    with pytest.raises(ArtifactLocationError, match=r"without \. or \.\."):
        render_deployment(OWNER, spec_of(GPU_MODEL), Artifact(digest=DIGEST, uri=uri))


def test_the_cleanup_job_removes_folders_inside_the_models_own_folder_only() -> None:
    spec = spec_of(GPU_MODEL)
    job = render_cleanup_job(OWNER, spec, [DIGEST], image=IMAGE)
    pod = pod_spec(job)
    (store,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] != "tmp"]
    assert store["subPath"] == "artifacts/ml/minilm" and store["readOnly"] is False
    assert pod["containers"][0]["command"][-1] == f"{store['mountPath']}/{DIGEST}"


@pytest.mark.parametrize("render", ["job", "deployment"])
def test_pods_are_restricted(render: str) -> None:
    spec = spec_of(GPU_MODEL)
    manifest = (
        render_job(OWNER, spec, DIGEST, image=IMAGE)
        if render == "job"
        else render_deployment(OWNER, spec, artifact_for(spec))
    )
    pod = pod_spec(manifest)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert manifest["metadata"]["ownerReferences"][0]["controller"] is True


def test_spec_config_map_carries_the_spec_the_optimizer_can_load() -> None:
    spec = spec_of(GPU_MODEL)
    config_map = render_spec_config_map(OWNER, spec, DIGEST)
    assert config_map["metadata"]["name"] == job_name("minilm", DIGEST)
    loaded = OptimizedModel.model_validate(yaml.safe_load(config_map["data"]["spec.yaml"]))
    assert loaded.spec == spec


def test_deployment_serves_the_artifact_by_digest_and_rolls_on_a_new_one() -> None:
    spec = spec_of(GPU_MODEL)
    deployment = render_deployment(OWNER, spec, artifact_for(spec))
    container = pod_spec(deployment)["containers"][0]
    repo = f"/mnt/pvc/model-store/artifacts/ml/minilm/{DIGEST}/model_repository"
    assert f"--artifact={repo}" in pod_spec(deployment)["initContainers"][0]["command"]
    assert "--cache-config=local,size=1048576" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert [p["containerPort"] for p in container["ports"]] == [8000, 8001, 8002]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8002"
    assert annotations["optiserve.io/artifact-digest"] == DIGEST
    uri = artifact_uri(spec, "f" * 64, namespace="ml", name="minilm")
    other = Artifact(digest="f" * 64, uri=uri)
    rolled = render_deployment(OWNER, spec, other)
    assert rolled["spec"]["template"] != deployment["spec"]["template"]
    assert rolled["spec"]["selector"] == deployment["spec"]["selector"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["progressDeadlineSeconds"] == 600


def test_deployment_leaves_replicas_to_the_autoscaler() -> None:
    spec = spec_of(CPU_MODEL)
    deployment = render_deployment(CPU_OWNER, spec, artifact_for(spec, CPU_OWNER))
    assert "replicas" not in deployment["spec"]
    assert "nodeSelector" not in pod_spec(deployment)
    assert selector_string("digits") == (
        "app.kubernetes.io/component=server,optiserve.io/model=digits"
    )


def test_service_selects_the_deployment_pods() -> None:
    spec = spec_of(GPU_MODEL)
    deployment = render_deployment(OWNER, spec, artifact_for(spec))
    service = render_service(OWNER)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["metadata"]["name"] == deployment["metadata"]["name"] == "minilm"


def test_artifact_outside_a_claim_cannot_be_served() -> None:
    spec = spec_of(GPU_MODEL)
    with pytest.raises(ArtifactLocationError, match="pvc://"):
        render_deployment(OWNER, spec, Artifact(digest=DIGEST, uri="file:///tmp/repo"))


def test_rendering_is_pure_and_repeatable() -> None:
    spec = spec_of(GPU_MODEL)
    first = render_job(OWNER, spec, DIGEST, image=IMAGE)
    assert first == render_job(OWNER, spec, DIGEST, image=IMAGE)
    assert render_deployment(OWNER, spec, artifact_for(spec)) == render_deployment(
        OWNER, spec, artifact_for(spec)
    )

"""No privilege through the CRD: an OptimizedModel reaches only its own namespace's object-store
credentials (docs/object-storage.md, "Whose credentials").

The operator holds none (no Secret access in its RBAC: tests/chart/test_rbac.py; nothing of a
store in its own pod: below). A model names a Secret and a ConfigMap by name only; every pod
that gets them is rendered into the model's namespace, where the kubelet resolves the names,
so a name that tries to reach another namespace is refused before anything is rendered.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from optiserve.api import OptimizedModel
from optiserve.render.job import render_cleanup_job
from optiserve.render.kubernetes import Owner
from optiserve.render.manifests import render_all
from optiserve.validate import validate_object
from tests.chart.config_manifests import committed_objects
from tests.unit.specs import minimal

OWNER = Owner(name="m", namespace="team-a", uid="0000-1111")
DIGEST = "d" * 64


def s3_model(secret: str = "artifact-writer", ca: str = "corp-ca") -> dict[str, Any]:
    obj = minimal()
    obj["metadata"]["namespace"] = "team-a"
    obj["spec"]["source"]["uri"] = "s3://models/m.onnx"
    obj["spec"]["storage"] = {"s3": "s3://artifacts/prod", "keepArtifactsOnDelete": False}
    obj["spec"]["objectStore"] = {
        "endpoint": "https://minio.storage.svc:9000",
        "credentialsSecret": secret,
        "caBundle": {"configMap": ca},
    }
    return obj


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("credentialsSecret", "team-b/artifact-writer"),
        ("credentialsSecret", "../team-b/artifact-writer"),
        ("credentialsSecret", "kube-system:aws"),
        ("caBundle", "team-b/corp-ca"),
    ],
)
def test_a_name_reaching_into_another_namespace_is_refused(field: str, name: str) -> None:
    obj = s3_model(**({"secret": name} if field == "credentialsSecret" else {"ca": name}))
    model, problems = validate_object(obj, "model.yaml")
    assert model is None
    assert [p for p in problems if field in p.path], problems


def pods(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(namespace, pod spec, manifest) of every pod template the operator renders for it."""
    model = OptimizedModel.from_wire(obj)
    manifests = render_all(model, digest=DIGEST, optimizer_image="opt:1", namespace="team-a")
    cleanup = render_cleanup_job(OWNER, model.spec, [DIGEST], image="opt:1")
    found = []
    for manifest in [*manifests, cleanup]:
        template = (manifest.get("spec") or {}).get("template")
        if template is not None:
            found.append((manifest["metadata"]["namespace"], template["spec"], manifest))
    return found


def test_every_pod_with_store_credentials_runs_in_the_models_namespace_by_name_only() -> None:
    rendered = pods(s3_model())
    model = OptimizedModel.from_wire(s3_model())
    own_config_maps = {
        m["metadata"]["name"]
        for m in render_all(model, digest=DIGEST, optimizer_image="opt:1", namespace="team-a")
        if m["kind"] == "ConfigMap"
    }
    assert {m["kind"] for _, _, m in rendered} == {"Job", "Deployment"}
    with_credentials = 0
    for namespace, pod, manifest in rendered:
        assert namespace == "team-a", manifest["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pod  # only the operator's own flag sets one
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            env = container.get("env", [])
            for ref in (e.get("valueFrom", {}).get("secretKeyRef") for e in env):
                if ref is None:
                    continue
                # A secretKeyRef has no namespace: the kubelet reads the pod's own.
                assert set(ref) <= {"name", "key", "optional"}
                assert ref["name"] == "artifact-writer"
                with_credentials += 1
        for volume in pod.get("volumes", []):
            assert "secret" not in volume
            if "configMap" in volume:  # the CA bundle, or a ConfigMap the operator renders
                assert volume["configMap"]["name"] in {"corp-ca", *own_config_maps}
    # The Job, the pull init container and the cleanup Job: three keys each.
    assert with_credentials == 9


def test_the_operator_itself_carries_no_object_store_credentials() -> None:
    deployment = next(o for o in committed_objects() if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    text = json.dumps(pod)
    assert "secretKeyRef" not in text and '"secret"' not in text
    for container in pod["containers"]:
        names = {e["name"] for e in container.get("env", [])}
        assert not {n for n in names if n.startswith("AWS_") or "S3" in n}, names

"""``storage.s3``: validation, and what the operator renders for it (the Job's upload target,
the Triton pod's pull init container, the cleanup Job, the network policy), with no secret
value anywhere and the claim case unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from optiserve.api import OptimizedModel
from optiserve.api.status import Artifact
from optiserve.render.deployment import ArtifactLocationError, render_deployment
from optiserve.render.job import render_cleanup_job
from optiserve.render.kubernetes import Owner
from optiserve.render.manifests import render_all
from tests.unit.specs import minimal

SECRET_NAME = "artifact-writer"
DIGEST = "c" * 64
OWNER = Owner(name="m", namespace="team-a", uid="0000-1111")
PREFIX = "s3://optiserve-artifacts/prod/team-a/m"


def s3_storage(**storage: Any) -> dict[str, Any]:
    obj = minimal()
    obj["spec"]["storage"] = storage or {"s3": "s3://optiserve-artifacts/prod"}
    obj["spec"]["objectStore"] = {
        "endpoint": "http://seaweedfs.storage:8333",
        "addressing": "path",
        "credentialsSecret": SECRET_NAME,
    }
    return obj


def parse(obj: dict[str, Any]) -> OptimizedModel:
    return OptimizedModel.from_wire(obj)


def rendered(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    manifests = render_all(parse(obj), digest=DIGEST, optimizer_image="opt:1", namespace="team-a")
    return {m["kind"]: m for m in manifests}


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return pod


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize(
    "prefix",
    ["s3://bucket", "s3://bucket/", "s3://my.bucket-1/a/b_c/d.e", "s3://abc/Models(1)/x*y"],
)
def test_an_s3_prefix_is_accepted(prefix: str) -> None:
    assert parse(s3_storage(s3=prefix)).spec.storage.s3 == prefix


@pytest.mark.parametrize(
    "prefix",
    [
        "s3://Bucket/x",  # upper case bucket
        "s3://ab",  # too short
        "s3://bucket/../other",  # a parent segment
        "s3://bucket/./x",
        "s3://bucket/a//b",  # an empty segment
        "s3://bucket/a b",
        "s3://bucket/a?x=1",
        "https://bucket/x",
        "s3:/bucket",
    ],
)
def test_a_bad_s3_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match=r"storage\.s3"):
        parse(s3_storage(s3=prefix))


@pytest.mark.parametrize(
    "storage", [{"pvc": "model-store", "s3": "s3://bucket/x"}, {"subPath": "optiserve"}]
)
def test_storage_needs_exactly_one_place(storage: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"exactly one place: pvc .* or s3"):
        parse(s3_storage(**storage))


def test_the_job_builds_in_an_emptydir_and_uploads_to_the_models_prefix() -> None:
    job = rendered(s3_storage())["Job"]
    pod = pod_of(job)
    container = pod["containers"][0]
    assert container["command"][-2:] == ["--out", "/mnt/artifacts"]
    env = env_of(container)
    assert env["OPTISERVE_ARTIFACT_STORE"]["value"] == PREFIX
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://seaweedfs.storage:8333"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": key}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["artifacts"] == {"name": "artifacts", "emptyDir": {"sizeLimit": "20Gi"}}
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["models"]  # the input claim only: no storage claim, no RWX volume


def test_the_jobs_artifact_emptydir_is_bounded_by_its_ephemeral_storage_limit() -> None:
    obj = s3_storage()
    obj["spec"]["optimization"]["job"] = {"resources": {"limits": {"ephemeral-storage": "80Gi"}}}
    volumes = {v["name"]: v for v in pod_of(rendered(obj)["Job"])["volumes"]}
    assert volumes["artifacts"]["emptyDir"] == {"sizeLimit": "80Gi"}


def test_the_triton_pod_pulls_the_artifact_and_only_the_pull_has_credentials() -> None:
    deployment = rendered(s3_storage())["Deployment"]
    pod = pod_of(deployment)
    pull, assemble = pod["initContainers"]
    assert pull["name"] == "artifact-pull"
    assert pull["command"] == [
        "python",
        "-m",
        "optiserve.remote.artifact_cli",
        "pull",
        f"{PREFIX}/{DIGEST}",
        f"/mnt/artifact-store/{DIGEST}",
    ]
    env = env_of(pull)
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
    assert {"name": "artifact", "mountPath": "/mnt/artifact-store"} in pull["volumeMounts"]
    triton = pod["containers"][0]
    read_only = {
        "name": "artifact",
        "mountPath": "/mnt/artifact",
        "subPath": f"{DIGEST}/model_repository",
        "readOnly": True,
    }
    assert read_only in assemble["volumeMounts"] and read_only in triton["volumeMounts"]
    assert "--artifact=/mnt/artifact" in assemble["command"]
    for container in (assemble, triton):
        assert not [n for n in env_of(container) if n.startswith("AWS_")]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["artifact"] == {"name": "artifact", "emptyDir": {"sizeLimit": "20Gi"}}
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]


def test_no_rendered_object_holds_a_secret_value() -> None:
    objects = rendered(s3_storage())
    assert "Secret" not in objects
    for kind, manifest in objects.items():
        text = json.dumps(manifest)
        assert '"secret":' not in text, kind  # no secret volume
        for container in (
            [*pod_of(manifest).get("initContainers", []), *pod_of(manifest)["containers"]]
            if kind in ("Job", "Deployment")
            else []
        ):
            literal = [
                e["name"]
                for e in container.get("env", [])
                if e["name"].startswith("AWS_") and "value" in e
            ]
            assert set(literal) <= {"AWS_ENDPOINT_URL_S3", "AWS_REGION"}, (kind, literal)


def test_the_cleanup_job_deletes_the_digests_objects_without_a_volume() -> None:
    model = parse(s3_storage())
    job = render_cleanup_job(OWNER, model.spec, [DIGEST, "a" * 64], image="opt:1")
    pod = pod_of(job)
    container = pod["containers"][0]
    assert container["command"] == [
        *("python", "-m", "optiserve.remote.artifact_cli", "delete", PREFIX),
        *("a" * 64, DIGEST),
    ]
    assert (
        env_of(container)["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
    )
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]


def test_the_claim_cleanup_job_is_unchanged() -> None:
    model = parse(minimal())
    pod = pod_of(render_cleanup_job(OWNER, model.spec, [DIGEST], image="opt:1"))
    assert pod["containers"][0]["command"][:2] == ["python", "-c"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "artifacts"]
    assert "env" not in pod["containers"][0]


def test_the_network_policy_lets_the_pull_reach_the_store_and_nothing_else() -> None:
    obj = s3_storage()
    obj["spec"]["serving"] = {"networkPolicy": {"enabled": True}}
    egress = rendered(obj)["NetworkPolicy"]["spec"]["egress"]
    assert egress == [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"ports": [{"protocol": "TCP", "port": 8333}]},
    ]
    obj = minimal()
    obj["spec"]["serving"] = {"networkPolicy": {"enabled": True}}
    assert "egress" not in rendered(obj)["NetworkPolicy"]["spec"]  # a claim: no egress at all


def test_a_claim_renders_no_pull_and_no_store() -> None:
    objects = rendered(minimal())
    assert [c["name"] for c in pod_of(objects["Deployment"])["initContainers"]] == [
        "serving-config"
    ]
    env = env_of(pod_of(objects["Job"])["containers"][0])
    assert "OPTISERVE_ARTIFACT_STORE" not in env


def test_an_s3_artifact_of_another_digest_is_refused() -> None:
    model = parse(s3_storage())
    artifact = Artifact(digest=DIGEST, uri=f"{PREFIX}/{'d' * 64}/model_repository")
    with pytest.raises(ArtifactLocationError, match="expected s3://"):
        render_deployment(OWNER, model.spec, artifact)

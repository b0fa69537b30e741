"""spec.objectStore.caBundle: validation, and the ConfigMap key mounted read-only into exactly
the containers that reach the store (the Job, artifact-pull, the cleanup Job), never Triton."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from optiserve.render.job import render_cleanup_job
from tests.unit.specs import minimal
from tests.unit.test_s3_storage import OWNER, env_of, parse, pod_of, rendered, s3_storage

CA_FILE = "/etc/optiserve/ca/ca.crt"
CA_MOUNT = {"name": "ca-bundle", "mountPath": "/etc/optiserve/ca", "readOnly": True}


def with_ca(ca: dict[str, Any] | None, **storage: Any) -> dict[str, Any]:
    obj = s3_storage(**storage)
    if ca is not None:
        obj["spec"]["objectStore"]["caBundle"] = ca
    return obj


def ca_volume(config_map: str, key: str) -> dict[str, Any]:
    items = [{"key": key, "path": "ca.crt"}]
    return {
        "name": "ca-bundle",
        "configMap": {"name": config_map, "items": items, "defaultMode": 0o444},
    }


def test_the_key_defaults_to_ca_crt() -> None:
    store = parse(with_ca({"configMap": "corp-ca"})).spec.object_store
    assert store is not None and store.ca_bundle is not None
    assert (store.ca_bundle.config_map, store.ca_bundle.key) == ("corp-ca", "ca.crt")


@pytest.mark.parametrize(
    "ca",
    [
        {},
        {"configMap": "Corp_CA"},
        {"configMap": "corp-ca", "key": ""},
        {"configMap": "corp-ca", "key": "a/b"},
        {"configMap": "corp-ca", "key": ".."},
        {"configMap": "corp-ca", "key": "..data"},
        {"configMap": "corp-ca", "secret": "x"},
    ],
)
def test_a_bad_ca_bundle_reference_is_refused(ca: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse(with_ca(ca))


@pytest.mark.parametrize("key", ["ca.crt", "bundle.pem", ".hidden", "ca-bundle_2.crt"])
def test_a_configmap_key_is_accepted(key: str) -> None:
    parse(with_ca({"configMap": "corp-ca", "key": key}))


def test_the_job_mounts_only_the_key_read_only_and_names_the_file() -> None:
    job = rendered(with_ca({"configMap": "corp-ca", "key": "bundle.pem"}))["Job"]
    pod = pod_of(job)
    container = pod["containers"][0]
    assert env_of(container)["OPTISERVE_CA_BUNDLE"] == {
        "name": "OPTISERVE_CA_BUNDLE",
        "value": CA_FILE,
    }
    assert CA_MOUNT in container["volumeMounts"]
    assert ca_volume("corp-ca", "bundle.pem") in pod["volumes"]


def test_the_pull_gets_the_bundle_and_triton_does_not() -> None:
    pod = pod_of(rendered(with_ca({"configMap": "corp-ca"}))["Deployment"])
    pull, assemble = pod["initContainers"]
    assert pull["name"] == "artifact-pull"
    assert env_of(pull)["OPTISERVE_CA_BUNDLE"]["value"] == CA_FILE
    assert CA_MOUNT in pull["volumeMounts"]
    for container in (assemble, *pod["containers"]):
        assert "OPTISERVE_CA_BUNDLE" not in env_of(container), container["name"]
        assert all(m["name"] != "ca-bundle" for m in container["volumeMounts"])
    assert ca_volume("corp-ca", "ca.crt") in pod["volumes"]


def test_the_cleanup_job_gets_the_bundle() -> None:
    model = parse(with_ca({"configMap": "corp-ca"}))
    pod = pod_of(render_cleanup_job(OWNER, model.spec, ["c" * 64], image="opt:1"))
    container = pod["containers"][0]
    assert env_of(container)["OPTISERVE_CA_BUNDLE"]["value"] == CA_FILE
    assert CA_MOUNT in container["volumeMounts"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "ca-bundle"]


def test_a_claim_model_mounts_the_bundle_only_in_the_job() -> None:
    """https:// inputs with a claim for storage: the Job fetches them, nothing else does."""
    obj = with_ca({"configMap": "corp-ca"})
    obj["spec"]["storage"] = minimal()["spec"]["storage"]
    objects = rendered(obj)
    assert CA_MOUNT in pod_of(objects["Job"])["containers"][0]["volumeMounts"]
    deployment = pod_of(objects["Deployment"])
    assert all(v["name"] != "ca-bundle" for v in deployment["volumes"])
    cleanup = pod_of(render_cleanup_job(OWNER, parse(obj).spec, ["c" * 64], image="opt:1"))
    assert all(v["name"] != "ca-bundle" for v in cleanup["volumes"])


def test_without_a_bundle_nothing_changes() -> None:
    objects = rendered(with_ca(None))
    for kind in ("Job", "Deployment"):
        pod = pod_of(objects[kind])
        assert all(v["name"] != "ca-bundle" for v in pod["volumes"]), kind
        for container in (*pod.get("initContainers", []), *pod["containers"]):
            assert "OPTISERVE_CA_BUNDLE" not in env_of(container)


def test_an_https_only_model_may_set_just_the_bundle() -> None:
    """caBundle covers https:// inputs too: an objectStore with nothing else is valid."""
    obj = minimal()
    obj["spec"]["source"] = {"uri": "https://files.corp/m.onnx", "sha256": "a" * 64}
    obj["spec"]["objectStore"] = {"caBundle": {"configMap": "corp-ca"}}
    pod = pod_of(rendered(obj)["Job"])
    container = pod["containers"][0]
    assert env_of(container)["OPTISERVE_CA_BUNDLE"]["value"] == CA_FILE
    assert CA_MOUNT in container["volumeMounts"]
    assert ca_volume("corp-ca", "ca.crt") in pod["volumes"]

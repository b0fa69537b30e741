"""spec.objectStore and the https pin rule: validation, the Job's environment, no secret
anywhere the operator writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from optiserve.api import OptimizedModel
from optiserve.render.manifests import render_all
from tests.unit.specs import minimal, with_change

PIN = "a" * 64
SECRET_NAME = "model-bucket-reader"


def parse(obj: dict[str, Any]) -> OptimizedModel:
    return OptimizedModel.from_wire(obj)


def s3_model() -> dict[str, Any]:
    obj = minimal()
    obj["spec"]["source"] = {"uri": "s3://models/resnet/model.onnx"}
    obj["spec"]["optimization"]["accuracy"] = {"dataset": "s3://data/eval.npz"}
    obj["spec"]["objectStore"] = {
        "endpoint": "http://seaweedfs.storage:8333",
        "addressing": "path",
        "credentialsSecret": SECRET_NAME,
    }
    return obj


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("source", {"uri": "https://example.com/m.onnx"}),
        ("source", {"uri": "http://example.com/m.onnx"}),
        ("optimization.accuracy", {"dataset": "https://example.com/eval.npz"}),
        (
            "optimization.quantization",
            {
                "precision": "int8",
                "method": "static",
                "calibration": {"uri": "https://example.com/calib.npz"},
            },
        ),
        ("optimization.recovery", {"dataset": "https://example.com/train.npz"}),
        ("optimization.student", {"dataset": "https://example.com/train.npz"}),
    ],
)
def test_an_unpinned_https_input_is_refused_with_the_fix(path: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=r"needs a (sha256 pin|pin)"):
        parse(with_change(path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("source", {"uri": "https://example.com/m.onnx", "sha256": PIN}),
        ("source", {"uri": f"https://example.com/m.onnx#sha256={PIN}"}),
        ("source", {"uri": "s3://models/m.onnx"}),  # recommended, not required, for s3
        ("optimization.accuracy", {"dataset": f"https://example.com/e.npz#sha256={PIN}"}),
        ("optimization.accuracy", {"dataset": "s3://data/eval.npz"}),
    ],
)
def test_pinned_https_and_s3_inputs_are_accepted(path: str, value: Any) -> None:
    parse(with_change(path, value))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("endpoint", "seaweedfs:8333"),  # no scheme
        ("endpoint", "https://user:pw@s3.example.com"),  # credentials do not go in the URL
        ("credentialsSecret", "Not_A_Name"),
        ("addressing", "dns"),
        ("region", "US East"),
    ],
)
def test_a_bad_object_store_is_refused(field: str, value: str) -> None:
    obj = s3_model()
    obj["spec"]["objectStore"][field] = value
    with pytest.raises(ValidationError, match=field):
        parse(obj)


def job_of(model: OptimizedModel) -> dict[str, Any]:
    manifests = render_all(model, digest="sha256:" + "b" * 64, optimizer_image="opt:1")
    return next(m for m in manifests if m["kind"] == "Job")


def test_the_job_gets_the_store_and_only_the_named_secret_by_reference() -> None:
    env = job_of(parse(s3_model()))["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["AWS_ENDPOINT_URL_S3"]["value"] == "http://seaweedfs.storage:8333"
    assert by_name["OPTISERVE_S3_ADDRESSING"]["value"] == "path"
    assert by_name["AWS_REGION"]["value"] == "us-east-1"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert by_name[key] == {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": key}},
        }
    assert by_name["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e]
    assert set(refs) == {SECRET_NAME}


def test_no_rendered_object_holds_a_secret_or_mounts_one() -> None:
    """The operator renders references only: no Secret object, no secret volume, no literal
    credential variable, and the Secret's name only inside the Job's secretKeyRefs."""
    model = parse(s3_model())
    manifests = render_all(model, digest="sha256:" + "b" * 64, optimizer_image="opt:1")
    assert not [m for m in manifests if m["kind"] == "Secret"]
    for manifest in manifests:
        text = json.dumps(manifest)
        assert '"secret":' not in text  # no secret volume
        if manifest["kind"] != "Job":
            # The spec ConfigMap carries the spec (the Secret's name, no value); nothing else
            # names the Secret.
            assert SECRET_NAME not in text or manifest["kind"] == "ConfigMap"
    job_env = job_of(model)["spec"]["template"]["spec"]["containers"][0]["env"]
    literal = [e for e in job_env if e["name"].startswith("AWS_") and "value" in e]
    assert {e["name"] for e in literal} == {"AWS_ENDPOINT_URL_S3", "AWS_REGION"}


def test_without_an_object_store_the_job_has_no_aws_variables() -> None:
    env = job_of(parse(minimal()))["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not [e for e in env if e["name"].startswith(("AWS_", "OPTISERVE_S3"))]

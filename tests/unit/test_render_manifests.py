"""``render_all`` and ``optiserve render``: what the operator would create, printed for review."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiserve.api import OptimizedModel
from optiserve.api.status import Artifact, OptimizedModelStatus
from optiserve.render.job import artifact_uri
from optiserve.render.kubernetes import Owner
from optiserve.render.manifests import render_all
from optiserve.render_cli import add_render_parser, manifests_yaml
from optiserve_operator.reconcile import Config, ModelState, Observed, plan, recipe_digest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
IMAGE = "ghcr.io/optiserve/optimizer:0.1.0"
UID = "0b8e3a52-1111-2222-3333-444455556666"
NOW = "2026-11-26T05:00:00Z"
BASE: dict[str, Any] = {
    "apiVersion": "optiserve.io/v1alpha1",
    "kind": "OptimizedModel",
    "metadata": {"name": "minilm", "namespace": "ml"},
    "spec": {
        "source": {"uri": "pvc://models/minilm.onnx"},
        "optimization": {"accuracy": {"dataset": "pvc://data/eval.npz"}},
        "serving": {"replicas": 2},
        "storage": {"pvc": "model-store"},
    },
}
# Fields the API server owns; a rendering that carries them makes `kubectl diff` noisy.
SERVER_FIELDS = {
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "status",
}


def model_with(**serving: Any) -> OptimizedModel:
    obj = copy.deepcopy(BASE)
    obj["spec"]["serving"].update(serving)
    return OptimizedModel.model_validate(obj)


def render(model: OptimizedModel, **kwargs: Any) -> list[dict[str, Any]]:
    return render_all(
        model,
        digest=recipe_digest(model.metadata.name, model.spec),
        optimizer_image=IMAGE,
        **kwargs,
    )


def keys_anywhere(value: Any, path: str = "") -> set[str]:
    """Every mapping key in ``value``, except inside ConfigMap data (user text)."""
    if isinstance(value, dict):
        found: set[str] = set()
        for key, child in value.items():
            if path == "" and key == "data":
                continue
            found.add(key)
            found |= keys_anywhere(child, f"{path}.{key}")
        return found
    if isinstance(value, list):
        return set().union(*(keys_anywhere(v, path) for v in value)) if value else set()
    return set()


def test_every_object_in_apply_order() -> None:
    kinds = [m["kind"] for m in render(model_with())]
    assert kinds == ["ConfigMap", "Job", "Service", "Deployment", "PodDisruptionBudget"]
    hpa = render(model_with(autoscaling={"maxReplicas": 4}))
    assert [m["kind"] for m in hpa][-1] == "HorizontalPodAutoscaler"
    keda = render(model_with(autoscaling={"provider": "keda", "minReplicas": 0}))
    assert [m["kind"] for m in keda][-1] == "ScaledObject"


def test_nothing_the_api_server_fills_in() -> None:
    for manifest in render(model_with(autoscaling={"maxReplicas": 4})):
        assert not keys_anywhere(manifest) & SERVER_FIELDS, manifest["kind"]
        assert "ownerReferences" not in manifest["metadata"], "no uid, so no owner reference"


def test_owner_references_when_the_uid_is_known() -> None:
    for manifest in render(model_with(), owner_uid=UID):
        (ref,) = manifest["metadata"]["ownerReferences"]
        assert ref["uid"] == UID and ref["name"] == "minilm" and ref["controller"] is True


def test_namespace_from_the_file_then_the_flag_then_default() -> None:
    assert {m["metadata"]["namespace"] for m in render(model_with())} == {"ml"}
    assert {m["metadata"]["namespace"] for m in render(model_with(), namespace="x")} == {"x"}
    obj = copy.deepcopy(BASE)
    del obj["metadata"]["namespace"]
    bare = OptimizedModel.model_validate(obj)
    assert {m["metadata"]["namespace"] for m in render(bare)} == {"default"}


def test_a_given_artifact_is_what_the_deployment_serves() -> None:
    model = model_with()
    artifact = Artifact(digest="a" * 64, uri="pvc://model-store/elsewhere/model_repository")
    (deployment,) = [m for m in render(model, artifact=artifact) if m["kind"] == "Deployment"]
    assert "/mnt/pvc/model-store/elsewhere/model_repository" in str(deployment)


def _operator_objects(model: OptimizedModel) -> list[dict[str, Any]]:
    """What the operator's reconcile passes create and apply for ``model``, in two passes."""
    owner = Owner(name=model.metadata.name, namespace=model.metadata.namespace or "", uid=UID)
    config = Config(optimizer_image=IMAGE)
    digest = recipe_digest(model.metadata.name, model.spec)

    def state(status: OptimizedModelStatus) -> Observed:
        return Observed(ModelState(owner, 1, {}, model.spec, status))

    first = plan(state(OptimizedModelStatus()), NOW, config)  # creates the ConfigMap and Job
    done = OptimizedModelStatus(
        artifact=Artifact(
            digest=digest,
            uri=artifact_uri(model.spec, digest, namespace=owner.namespace, name=owner.name),
        )
    )
    second = plan(state(done), NOW, config)  # the artifact exists: applies the serving side
    return [*first.create, *second.apply]


def _by_kind_and_name(manifests: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


def test_render_shows_exactly_what_the_operator_creates() -> None:
    model = model_with()
    ours = _by_kind_and_name(render(model, owner_uid=UID))
    theirs = _by_kind_and_name(_operator_objects(model))
    assert ours == theirs


@pytest.mark.parametrize("provider", ["hpa", "keda"])
def test_render_shows_the_operators_autoscaler(provider: str) -> None:
    model = model_with(autoscaling={"provider": provider, "minReplicas": 1, "maxReplicas": 4})
    ours = _by_kind_and_name(render(model, owner_uid=UID))
    theirs = _by_kind_and_name(_operator_objects(model))
    assert ours == theirs


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_render_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_cli_renders_every_example_the_same_twice(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_cli(["render", str(example), "--optimizer-image", IMAGE]) == 0
    first = capsys.readouterr().out
    assert _run_cli(["render", str(example), "--optimizer-image", IMAGE]) == 0
    assert capsys.readouterr().out == first
    documents = list(yaml.safe_load_all(first))
    assert first.startswith("---\n")
    assert all(d["apiVersion"] and d["kind"] and d["metadata"]["name"] for d in documents)
    assert {d["kind"] for d in documents} >= {"ConfigMap", "Job", "Deployment", "Service"}


def test_cli_refuses_an_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    obj = copy.deepcopy(BASE)
    obj["spec"]["serving"]["maxBatchSize"] = "lots"
    bad.write_text(yaml.safe_dump(obj))
    assert _run_cli(["render", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "maxBatchSize" in captured.err


def test_cli_explains_a_target_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    obj = copy.deepcopy(BASE)
    obj["spec"]["serving"]["autoscaling"] = {"metric": "pendingRequests", "target": "50ms"}
    path.write_text(yaml.safe_dump(obj))
    assert _run_cli(["render", str(path), "--optimizer-image", IMAGE]) == 1
    assert "only metric queueTime" in capsys.readouterr().err


def test_multi_document_yaml_round_trips() -> None:
    manifests = render(model_with(autoscaling={"maxReplicas": 4}))
    assert list(yaml.safe_load_all(manifests_yaml(manifests))) == manifests

"""The canary's Deployments derived from the rendered one: names, labels, selector, GPUs."""

from __future__ import annotations

import copy
from typing import Any

from optiserve.api import OptimizedModel
from optiserve.api.status import Artifact
from optiserve.render.canary import (
    SUMMARY_LATENCIES,
    as_canary,
    as_stable,
    gpus_per_pod,
    with_latency_summaries,
)
from optiserve.render.deployment import render_deployment, selector_labels
from optiserve.render.job import artifact_uri
from optiserve.render.kubernetes import Manifest, Owner
from tests.unit.test_render_kubernetes import CPU_MODEL, CPU_OWNER, DIGEST, GPU_MODEL, OWNER


def _deployment(obj: dict[str, Any], owner: Owner, gpus: int | None = None) -> Manifest:
    model = copy.deepcopy(obj)
    if gpus is not None:
        model["spec"]["serving"]["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    spec = OptimizedModel.model_validate(model).spec
    uri = artifact_uri(spec, DIGEST, namespace=owner.namespace, name=owner.name)
    return render_deployment(owner, spec, Artifact(digest=DIGEST, uri=uri))


def test_the_canary_is_selected_by_the_service_and_apart_from_the_stable() -> None:
    stable = _deployment(CPU_MODEL, CPU_OWNER)
    canary = as_canary(stable, 2)
    name = stable["metadata"]["name"]
    assert canary["metadata"]["name"] == f"{name}-canary" and canary["spec"]["replicas"] == 2
    pod_labels = canary["spec"]["template"]["metadata"]["labels"]
    service_selector = selector_labels(CPU_OWNER.name)
    assert service_selector.items() <= pod_labels.items()  # the Service serves it
    selector = canary["spec"]["selector"]["matchLabels"]
    assert selector == {**service_selector, "optiserve.io/revision": "canary"}
    assert "optiserve.io/revision" not in stable["spec"]["selector"]["matchLabels"]
    assert stable["metadata"]["name"] == name  # the input is left alone


def test_the_stable_during_a_canary_is_replaced_in_place_only_while_promoting() -> None:
    stable = _deployment(CPU_MODEL, CPU_OWNER)
    held = as_stable(stable, 1, in_place=False)
    assert held["spec"]["replicas"] == 1 and held["spec"]["strategy"] == stable["spec"]["strategy"]
    promoting = as_stable(stable, 1, in_place=True)
    assert promoting["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_latency_summaries_are_switched_on_once() -> None:
    twice = with_latency_summaries(with_latency_summaries(_deployment(CPU_MODEL, CPU_OWNER)))
    args = twice["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args.count(SUMMARY_LATENCIES) == 1


def test_gpus_per_pod_counts_the_nvidia_resources() -> None:
    assert gpus_per_pod(_deployment(CPU_MODEL, CPU_OWNER)) == 0
    assert gpus_per_pod(_deployment(GPU_MODEL, OWNER)) == 1
    assert gpus_per_pod(_deployment(GPU_MODEL, OWNER, gpus=2)) == 2

"""Only the accelerator a spec asks for is requested, and the optimizer's deterministic
failures end its Job at once."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from optiserve.api import OptimizedModel, OptimizedModelSpec
from optiserve.api.status import Artifact
from optiserve.render.deployment import render_deployment
from optiserve.render.job import USER_ERROR_EXIT_CODE, artifact_uri, render_job
from optiserve_optimizer.errors import MissingDependencyError, OptimizerError, SpecError
from tests.unit.test_render_kubernetes import (
    CPU_MODEL,
    CPU_OWNER,
    DIGEST,
    GPU_MODEL,
    IMAGE,
    OWNER,
    pod_spec,
)

MIG = "nvidia.com/mig-1g.10gb"


def _gpu_spec(
    job_resources: dict[str, Any], serving_resources: dict[str, Any]
) -> OptimizedModelSpec:
    obj = copy.deepcopy(GPU_MODEL)
    obj["spec"]["optimization"]["job"]["resources"] = job_resources
    obj["spec"]["serving"]["resources"] = serving_resources
    return OptimizedModel.model_validate(obj).spec


def _resources(manifest: dict[str, Any]) -> dict[str, Any]:
    return dict(pod_spec(manifest)["containers"][0].get("resources") or {})


def _extended(resources: dict[str, Any]) -> dict[str, Any]:
    """Only the accelerators (cpu, memory and ephemeral-storage are sized by render/sizing)."""
    out = {
        kind: {k: v for k, v in values.items() if "/" in k} for kind, values in resources.items()
    }
    return {kind: values for kind, values in out.items() if values}


def _both(spec: OptimizedModelSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    uri = artifact_uri(spec, DIGEST, namespace=OWNER.namespace, name=OWNER.name)
    artifact = Artifact(digest=DIGEST, uri=uri)
    job = render_job(OWNER, spec, DIGEST, image=IMAGE)
    return _resources(job), _resources(render_deployment(OWNER, spec, artifact))


def test_a_mig_slice_is_requested_alone_not_with_a_whole_gpu() -> None:
    job, server = _both(_gpu_spec({"limits": {MIG: 1}}, {"limits": {MIG: 1, "memory": "8Gi"}}))
    assert _extended(job) == {"limits": {MIG: 1}}
    assert _extended(server) == {"limits": {MIG: 1}}
    # The spec's memory limit wins, and no computed memory request is left beside it.
    assert server["limits"]["memory"] == "8Gi" and "memory" not in server["requests"]


@pytest.mark.parametrize("shared", ["nvidia.com/gpu.shared", "nvidia.com/mig-3g.40gb"])
def test_a_slice_asked_for_in_requests_only_gets_it_as_its_limit_too(shared: str) -> None:
    # Extended resources cannot be overcommitted: the API server wants the limit.
    job, _ = _both(_gpu_spec({"requests": {shared: 2, "cpu": "4"}}, {}))
    assert _extended(job) == {"limits": {shared: 2}, "requests": {shared: 2}}
    assert job["requests"]["cpu"] == "4" and "cpu" not in job["limits"]


def test_a_gpu_target_that_names_no_nvidia_resource_gets_one_whole_gpu() -> None:
    job, server = _both(_gpu_spec({"limits": {"memory": "32Gi"}}, {}))
    assert _extended(job) == {"limits": {"nvidia.com/gpu": 1}}
    assert job["limits"]["memory"] == "32Gi"
    assert _extended(server) == {"limits": {"nvidia.com/gpu": 1}}
    job, _ = _both(_gpu_spec({"limits": {"nvidia.com/gpu": 2}}, {}))
    assert _extended(job) == {"limits": {"nvidia.com/gpu": 2}}


def test_a_cpu_target_gets_no_accelerator() -> None:
    spec = OptimizedModel.model_validate(CPU_MODEL).spec
    job = render_job(CPU_OWNER, spec, DIGEST, image=IMAGE)
    assert not _extended(_resources(job))
    assert set(_resources(job)["requests"]) == {"cpu", "memory", "ephemeral-storage"}


def test_the_job_fails_at_once_on_the_optimizers_user_error_exit_code() -> None:
    # The two packages must agree: the renderer cannot import the optimizer.
    assert USER_ERROR_EXIT_CODE == OptimizerError.exit_code == SpecError.exit_code
    job = render_job(OWNER, OptimizedModel.model_validate(GPU_MODEL).spec, DIGEST, image=IMAGE)
    rules = job["spec"]["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    assert fail_job == [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "optimizer", "operator": "In", "values": [2]},
        }
    ]
    # A missing GPU or library may be the node's fault: retried within backoffLimit.
    assert MissingDependencyError.exit_code not in fail_job[0]["onExitCodes"]["values"]
    assert 1 not in fail_job[0]["onExitCodes"]["values"]
    # Evictions and preemptions do not use up the retries.
    assert {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget"}],
    } in rules
    # podFailurePolicy is only allowed with restartPolicy Never.
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert pod_spec(job)["containers"][0]["name"] == "optimizer"

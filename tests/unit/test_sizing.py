"""The Triton pod's requests and limits follow the Job's measurement by the stated rule, the
spec's own values win one resource at a time, and the Job gets documented defaults."""

from __future__ import annotations

import copy
from typing import Any

from optiserve.api import OptimizedModel
from optiserve.api.status import Artifact, ServingCost
from optiserve.render.deployment import render_deployment, serving_status
from optiserve.render.sizing import (
    JOB_LIMITS,
    JOB_REQUESTS,
    MIB,
    job_sizing,
    triton_sizing,
)
from tests.unit.test_render_kubernetes import CPU_MODEL, CPU_OWNER, DIGEST, pod_spec

GIB = 1024 * MIB


def cost(peak_mib: int, runtime_mib: int = 60, cpu_ms: float = 2.0) -> ServingCost:
    return ServingCost(
        peak_rss_bytes=peak_mib * MIB,
        runtime_rss_bytes=runtime_mib * MIB,
        cpu_seconds_per_inference=cpu_ms / 1000,
        batch=32,
        threads=2,
        runtime="onnxruntime 1.23.2",
    )


def test_memory_is_model_rss_plus_triton_allowance_times_headroom_and_limit_twice() -> None:
    sized = triton_sizing(cost(peak_mib=472, runtime_mib=60))  # the model: 412 MiB
    assert sized.requests["memory"] == f"{(412 + 256) * 3 // 2}Mi" == "1002Mi"
    assert sized.limits["memory"] == "2004Mi"
    assert "model RSS 412 MiB x 1 + 256 MiB Triton) x 1.5" in sized.basis


def test_instances_and_the_response_cache_add_to_the_memory_request() -> None:
    sized = triton_sizing(cost(peak_mib=160, runtime_mib=60), instances=2, cache_bytes=256 * MIB)
    assert sized.requests["memory"] == f"{(100 * 2 + 256 + 256) * 3 // 2}Mi"
    assert "response cache" in sized.basis


def test_cpu_request_follows_cpu_per_inference_at_the_target_rate_with_a_floor() -> None:
    # 20 ms per inference x 50/s = 1 core; the limit is four times the request.
    busy = triton_sizing(cost(peak_mib=100, cpu_ms=20.0))
    assert (busy.requests["cpu"], busy.limits["cpu"]) == ("1", "4")
    # 0.1 ms x 50/s = 5m: the 250m floor applies, the limit is at least one core.
    light = triton_sizing(cost(peak_mib=100, cpu_ms=0.1))
    assert (light.requests["cpu"], light.limits["cpu"]) == ("250m", "1")
    # Absurdly slow: capped at 8 cores.
    assert triton_sizing(cost(peak_mib=100, cpu_ms=10_000)).requests["cpu"] == "8"


def test_without_a_measurement_the_defaults_apply_and_say_so() -> None:
    sized = triton_sizing(None)
    assert sized.requests == {"cpu": "500m", "memory": "1024Mi", "ephemeral-storage": "256Mi"}
    assert sized.limits == {"cpu": "2", "memory": "2048Mi", "ephemeral-storage": "1Gi"}
    assert sized.basis.startswith("defaults (no measurement yet)")


def test_a_bigger_model_gets_more_memory() -> None:
    small = triton_sizing(cost(peak_mib=200))
    big = triton_sizing(cost(peak_mib=2000))
    mib = [int(str(s.requests["memory"]).removesuffix("Mi")) for s in (small, big)]
    assert mib[1] - mib[0] == 1800 * 3 // 2


def _cpu_spec(serving_resources: dict[str, Any] | None = None) -> Any:
    obj = copy.deepcopy(CPU_MODEL)
    if serving_resources is not None:
        obj["spec"]["serving"]["resources"] = serving_resources
    return OptimizedModel.model_validate(obj).spec


def _artifact(measured: ServingCost | None) -> Artifact:
    return Artifact(digest=DIGEST, uri="pvc://models/optiserve/x/repo", serving_cost=measured)


def test_the_rendered_triton_pod_carries_the_measured_requests_and_the_tmp_limit() -> None:
    spec = _cpu_spec()
    measured = cost(peak_mib=472, cpu_ms=20.0)
    pod = pod_spec(render_deployment(CPU_OWNER, spec, _artifact(measured)))
    resources = pod["containers"][0]["resources"]
    assert not spec.serving.response_cache.enabled
    assert resources["requests"]["memory"] == "1002Mi"  # (412 + 256) x 1.5
    assert resources["limits"]["memory"] == "2004Mi"
    assert resources["requests"]["cpu"] == "1"
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"] == resources["limits"]["ephemeral-storage"]
    status = serving_status(spec, _artifact(measured)).resources
    assert status is not None and status.requests == {
        k: str(v) for k, v in resources["requests"].items()
    }
    assert status.basis.startswith("measured:")


def test_the_specs_own_values_win_one_resource_at_a_time() -> None:
    spec = _cpu_spec({"requests": {"memory": "3Gi"}, "limits": {"memory": "3Gi"}})
    resources = pod_spec(render_deployment(CPU_OWNER, spec, _artifact(cost(peak_mib=472))))[
        "containers"
    ][0]["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "3Gi"
    assert resources["requests"]["cpu"] == "250m"  # cpu still from the measurement
    basis = serving_status(spec, _artifact(cost(peak_mib=472))).resources
    assert basis is not None and basis.basis.startswith("the spec for memory; measured:")
    everything = {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"}
    spec = _cpu_spec({"requests": everything, "limits": everything})
    status = serving_status(spec, _artifact(cost(peak_mib=472))).resources
    assert status is not None and status.basis == "the spec (serving.resources)"
    assert status.requests == everything


def test_the_job_gets_the_documented_defaults_unless_the_spec_sets_its_own() -> None:
    assert job_sizing({}, {}).requests == JOB_REQUESTS
    assert job_sizing({}, {}).limits == JOB_LIMITS
    own = job_sizing({"memory": "64Gi"}, {"memory": "64Gi", "nvidia.com/gpu": 1})
    assert own.requests["memory"] == own.limits["memory"] == "64Gi"
    assert own.limits["nvidia.com/gpu"] == 1 and own.requests["cpu"] == JOB_REQUESTS["cpu"]

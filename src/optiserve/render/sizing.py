"""CPU, memory and ephemeral-storage requests and limits of the pods optiserve runs. Pure.

Triton's pod, for each of cpu, memory and ephemeral-storage ``serving.resources`` does not
name, is sized from what the optimization Job measured serving the chosen artifact
(``status.artifact.servingCost``):

- memory request = (model memory x instances + ``TRITON_MEMORY_ALLOWANCE`` + response cache)
  x ``MEMORY_HEADROOM``, where model memory is the measured child's peak RSS minus the same
  child's RSS after importing the runtime only (the runtime itself is inside Triton's
  allowance), instances is ``serving.instanceGroup.count`` (one session each) and the
  response cache is ``serving.responseCache.sizeBytes`` when enabled; memory limit =
  ``MEMORY_LIMIT_MULTIPLE`` x the request. Without a measurement (``optiserve render``
  before any Job ran, an artifact from an older optimizer): ``DEFAULT_MEMORY_REQUEST``, and
  the response cache, x ``MEMORY_HEADROOM``, is added to it.
- CPU request = CPU seconds per inference x ``TARGET_INFERENCES_PER_SECOND``, at least
  ``CPU_FLOOR_MILLI`` and at most ``CPU_CEILING_MILLI``; CPU limit =
  ``CPU_LIMIT_MULTIPLE`` x the request, at least one core (bursts, model loading).
- ephemeral-storage for the /tmp emptyDir Triton writes to (its cache, core files):
  ``TMP_REQUEST`` requested, ``TMP_LIMIT`` as limit and the emptyDir's sizeLimit.

Whatever the spec sets for a resource wins over the rule, one resource at a time.

The optimization Job cannot know its source model's size (the operator reads no volumes), so
a spec without ``optimization.job.resources`` gets ``JOB_REQUESTS`` / ``JOB_LIMITS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from optiserve.api.status import ServingCost

MIB = 1024 * 1024
TRITON_MEMORY_ALLOWANCE = 256 * MIB  # tritonserver + its backend libraries, no model loaded
MEMORY_HEADROOM = 1.5
MEMORY_LIMIT_MULTIPLE = 2
DEFAULT_MEMORY_REQUEST = 1024 * MIB
TARGET_INFERENCES_PER_SECOND = 50
CPU_FLOOR_MILLI = 250
CPU_CEILING_MILLI = 8000
CPU_LIMIT_MULTIPLE = 4
DEFAULT_CPU_REQUEST_MILLI = 500
TMP_REQUEST = "256Mi"
TMP_LIMIT = "1Gi"

JOB_REQUESTS = {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "2Gi"}
JOB_LIMITS = {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "20Gi"}
# The cleanup Job only runs shutil.rmtree in one Python process.
CLEANUP_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "16Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "64Mi"},
}
JOB_BASIS = "defaults (the operator cannot see the source model's size)"

SIZED = ("cpu", "memory", "ephemeral-storage")


@dataclass(frozen=True)
class Sizing:
    requests: dict[str, int | str]
    limits: dict[str, int | str]
    basis: str


def _mib(value: float) -> int:
    return math.ceil(value / MIB)


def _milli(value: int) -> str:
    return f"{value // 1000}" if value % 1000 == 0 else f"{value}m"


def triton_sizing(cost: ServingCost | None, instances: int = 1, cache_bytes: int = 0) -> Sizing:
    """The Triton container's requests and limits by the rule in this module's docstring."""
    cache = f" + {_mib(cache_bytes)} MiB response cache" if cache_bytes else ""
    if cost is None:
        memory = _mib(DEFAULT_MEMORY_REQUEST + cache_bytes * MEMORY_HEADROOM)
        cpu = DEFAULT_CPU_REQUEST_MILLI
        basis = (
            f"defaults (no measurement yet): memory {_mib(DEFAULT_MEMORY_REQUEST)} MiB"
            f"{cache} x {MEMORY_HEADROOM:g}, cpu {_milli(cpu)}; "
            f"limits memory x{MEMORY_LIMIT_MULTIPLE}, cpu x{CPU_LIMIT_MULTIPLE}"
        )
    else:
        model = cost.model_rss_bytes
        used = model * instances + TRITON_MEMORY_ALLOWANCE + cache_bytes
        memory = _mib(used * MEMORY_HEADROOM)
        wanted = math.ceil(cost.cpu_seconds_per_inference * TARGET_INFERENCES_PER_SECOND * 1000)
        cpu = min(CPU_CEILING_MILLI, max(CPU_FLOOR_MILLI, wanted))
        basis = (
            f"measured: (model RSS {_mib(model)} MiB x {instances} + "
            f"{_mib(TRITON_MEMORY_ALLOWANCE)} MiB Triton{cache}) x {MEMORY_HEADROOM:g}, "
            f"limit x{MEMORY_LIMIT_MULTIPLE}; "
            f"cpu {cost.cpu_seconds_per_inference * 1000:.3g} ms/inference at batch "
            f"{cost.batch} x {TARGET_INFERENCES_PER_SECOND}/s (floor {_milli(CPU_FLOOR_MILLI)}), "
            f"limit x{CPU_LIMIT_MULTIPLE}"
        )
    cpu_limit = max(1000, cpu * CPU_LIMIT_MULTIPLE)
    return Sizing(
        requests={"cpu": _milli(cpu), "memory": f"{memory}Mi", "ephemeral-storage": TMP_REQUEST},
        limits={
            "cpu": _milli(cpu_limit),
            "memory": f"{memory * MEMORY_LIMIT_MULTIPLE}Mi",
            "ephemeral-storage": TMP_LIMIT,
        },
        basis=basis,
    )


def with_spec(
    sized: Sizing, requests: Mapping[str, int | str], limits: Mapping[str, int | str]
) -> Sizing:
    """``sized`` with the spec's own values on top (each resource the spec names wins, in
    requests and limits alike; a resource the spec names only in one of them keeps nothing of
    the rule in the other, so a spec's request is never capped by a computed limit)."""
    named = set(requests) | set(limits)
    out_requests: dict[str, int | str] = {k: v for k, v in sized.requests.items() if k not in named}
    out_limits: dict[str, int | str] = {k: v for k, v in sized.limits.items() if k not in named}
    out_requests |= requests
    out_limits |= limits
    taken = sorted(k for k in named if k in SIZED)
    if not taken:
        return Sizing(out_requests, out_limits, sized.basis)
    if all(k in named for k in SIZED):
        return Sizing(out_requests, out_limits, "the spec (serving.resources)")
    return Sizing(out_requests, out_limits, f"the spec for {', '.join(taken)}; {sized.basis}")


def job_sizing(requests: Mapping[str, int | str], limits: Mapping[str, int | str]) -> Sizing:
    """The optimization Job's requests and limits: the spec's, else the defaults."""
    return with_spec(Sizing(dict(JOB_REQUESTS), dict(JOB_LIMITS), JOB_BASIS), requests, limits)

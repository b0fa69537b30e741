"""The Deployments of a canary rollout, derived from the one ``render_deployment`` makes. Pure.

The canary is a second Deployment, ``<name>-canary``, beside the stable one: its pods carry the
selector labels the Service selects on, so both revisions serve behind the one Service, and a
revision label besides, which its own (immutable) selector adds so the two Deployments never
claim each other's pods, and by which Prometheus tells the revisions' metrics apart (the pod
scrape job maps pod labels to series labels: ``optiserve_io_revision="canary"``).
Behind an HTTPRoute the route's backend weights carry the traffic instead, to a Service per
revision (``canary_route``).

With ``spec.rollout.strategy: canary`` both Deployments run Triton with latency summaries
(``--metrics-config=summary_latencies=true``), which is where the analysis reads each
revision's p99 from; switching the strategy on therefore rolls the stable once.
"""

from __future__ import annotations

import copy
from typing import Any

from optiserve.render.kubernetes import Manifest

LABEL_REVISION = "optiserve.io/revision"
CANARY = "canary"
SUMMARY_LATENCIES = "--metrics-config=summary_latencies=true"
# A GPU model's pods ask for NVIDIA's extended resources (whole GPUs, MIG slices, shares).
GPU_RESOURCE_PREFIX = "nvidia.com/"


def canary_name(model_name: str) -> str:
    return f"{model_name}-{CANARY}"


def _triton(manifest: Manifest) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = next(c for c in containers if c["name"] == "triton")
    return found


def with_latency_summaries(deployment: Manifest) -> Manifest:
    """The Deployment with Triton publishing p50/p90/p95/p99 summaries of request latency."""
    out = copy.deepcopy(deployment)
    args = _triton(out).setdefault("args", [])
    if SUMMARY_LATENCIES not in args:
        args.append(SUMMARY_LATENCIES)
    return out


def as_stable(deployment: Manifest, replicas: int, *, in_place: bool) -> Manifest:
    """The stable Deployment during a canary: the replica count of its share, and (while it
    takes the promoted artifact) replaced in place, so no surge pod exceeds the GPU budget;
    the canary pods serve the same artifact meanwhile."""
    out = copy.deepcopy(deployment)
    out["spec"]["replicas"] = replicas
    if in_place:
        out["spec"]["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
        }
    return out


def as_canary(deployment: Manifest, replicas: int) -> Manifest:
    """The canary Deployment from the stable's rendering of the candidate artifact."""
    out = copy.deepcopy(deployment)
    meta = out["metadata"]
    meta["name"] = canary_name(meta["name"])
    meta["labels"] = {**meta.get("labels", {}), LABEL_REVISION: CANARY}
    spec = out["spec"]
    spec["replicas"] = replicas
    spec["selector"]["matchLabels"] = {**spec["selector"]["matchLabels"], LABEL_REVISION: CANARY}
    template_meta = spec["template"]["metadata"]
    template_meta["labels"] = {**template_meta["labels"], LABEL_REVISION: CANARY}
    return out


def gpus_per_pod(deployment: Manifest) -> int:
    """The NVIDIA devices one pod of the Deployment holds (0: a CPU model)."""
    total = 0
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        limits = (container.get("resources") or {}).get("limits") or {}
        for name, value in limits.items():
            if name.startswith(GPU_RESOURCE_PREFIX):
                total += int(value)
    return total

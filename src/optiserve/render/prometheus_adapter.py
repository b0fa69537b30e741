"""prometheus-adapter rules that turn Triton's metrics into the HPA's custom metrics. Pure.

The HPA of :mod:`optiserve.render.autoscaling` asks the custom metrics API for
``triton_queue_time_per_request_us``, ``triton_pending_requests`` and
``triton_gpu_utilization_percent`` per pod; these rules tell prometheus-adapter how to compute
each one from the series Triton exports on its metrics port (8002). Install them once per
cluster, as the adapter's ConfigMap or as the Helm chart's ``rules.custom`` value;
``docs/autoscaling/`` holds both renderings (a test keeps them equal to this module).
"""

from __future__ import annotations

from typing import Any

import yaml

from optiserve.render.autoscaling import METRICS, RATE_WINDOW


def _rule(series: str, custom_metric: str, metrics_query: str) -> dict[str, Any]:
    return {
        "seriesQuery": f'{series}{{namespace!="",pod!=""}}',
        # Series labels that name Kubernetes objects (a fresh dict each time: shared ones
        # would come out as YAML anchors).
        "resources": {
            "overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        },
        "name": {"matches": f"^{series}$", "as": custom_metric},
        "metricsQuery": metrics_query,
    }


def adapter_rules() -> list[dict[str, Any]]:
    """The ``rules`` list of prometheus-adapter's config, one rule per scaling metric.

    Sums run per pod (``<<.GroupBy>>``) over all models a server holds: a pod is busy when
    any of its models is. Queue time divides by a clamped request rate so an idle pod reads 0
    and may scale down, instead of NaN, which the adapter drops.
    """
    window = RATE_WINDOW
    queue = (
        "sum by (<<.GroupBy>>) "
        f"(rate(nv_inference_queue_duration_us{{<<.LabelMatchers>>}}[{window}]))"
        " / clamp_min(sum by (<<.GroupBy>>) "
        f"(rate(nv_inference_request_success{{<<.LabelMatchers>>}}[{window}])), 1e-9)"
    )
    # Requests queued on average over the window (Little's law), not the sampled gauge
    # nv_inference_pending_request_count, which swings under steady load.
    pending = (
        "sum by (<<.GroupBy>>) "
        f"(rate(nv_inference_queue_duration_us{{<<.LabelMatchers>>}}[{window}])) / 1e6"
    )
    gpu = "avg by (<<.GroupBy>>) (nv_gpu_utilization{<<.LabelMatchers>>}) * 100"
    return [
        _rule("nv_inference_queue_duration_us", METRICS["queueTime"].custom_metric, queue),
        _rule("nv_inference_queue_duration_us", METRICS["pendingRequests"].custom_metric, pending),
        _rule("nv_gpu_utilization", METRICS["gpuUtilization"].custom_metric, gpu),
    ]


def render_adapter_config_map(
    namespace: str = "monitoring", name: str = "prometheus-adapter"
) -> dict[str, Any]:
    """The adapter's ConfigMap (``config.yaml``), for installs without its Helm chart."""
    config = yaml.safe_dump({"rules": adapter_rules()}, sort_keys=False, width=200)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"config.yaml": config},
    }


def helm_values() -> dict[str, Any]:
    """Values for the prometheus-community/prometheus-adapter chart."""
    return {"rules": {"default": False, "custom": adapter_rules()}}

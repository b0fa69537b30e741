"""The autoscaler of the Triton Deployment: a HorizontalPodAutoscaler or a KEDA ScaledObject. Pure.

Both scale on Triton's own signs that requests are waiting, not on CPU:

* ``queueTime``: microseconds an average request spent in Triton's queue,
  ``rate(nv_inference_queue_duration_us) / rate(nv_inference_request_success)``;
* ``pendingRequests``: requests accepted but not yet executing, averaged over the rate window:
  ``rate(nv_inference_queue_duration_us) / 1e6`` (Little's law: the microseconds requests spent
  queued per second of wall time is the mean number queued). The instantaneous gauge
  ``nv_inference_pending_request_count`` swings from 0 to several under steady load as the
  dynamic batcher drains the queue in bursts, and the HPA scaled down on its low samples while
  the load held (``benchmarks/results/hpa_scaling.md``);
* ``gpuUtilization``: percent busy of the GPUs a pod sees, ``nv_gpu_utilization * 100``.

The HPA reads them as Pods metrics through the custom metrics API, which prometheus-adapter
serves with the rules of :mod:`optiserve.render.prometheus_adapter`. KEDA asks Prometheus
directly with the PromQL built here. The autoscaler has the Deployment's name and the
Deployment leaves ``replicas`` unset while autoscaling is on, so the two never fight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from optiserve.api.serving import AutoscalingSpec
from optiserve.render.kubernetes import Manifest, Owner, common_labels, metadata, serving_name

COMPONENT = "autoscaler"
KEDA_API_VERSION = "keda.sh/v1alpha1"
# Triton's counters move once per scrape; a 1m window spans several 15s-30s scrapes.
RATE_WINDOW = "1m"

MetricName = Literal["queueTime", "pendingRequests", "gpuUtilization"]


class AutoscalingTargetError(ValueError):
    """``spec.serving.autoscaling.target`` is not a positive number the metric can use."""


@dataclass(frozen=True)
class TritonMetric:
    """One scaling signal: its custom-metrics name (HPA) and how KEDA's trigger reads it.

    ``keda_metric_type`` follows what the number means: a total across pods (pending requests)
    is divided by the target (AverageValue); an average (queue time, utilization) scales the
    replica count in proportion (Value), as the HPA does with a Pods metric.
    """

    custom_metric: str
    keda_metric_type: Literal["Value", "AverageValue"]
    unit: str


METRICS: dict[MetricName, TritonMetric] = {
    "queueTime": TritonMetric("triton_queue_time_per_request_us", "Value", "microseconds"),
    "pendingRequests": TritonMetric("triton_pending_requests", "AverageValue", "requests"),
    "gpuUtilization": TritonMetric("triton_gpu_utilization_percent", "Value", "percent"),
}

# Kubernetes resource.Quantity: a decimal number and an optional SI, binary or exponent suffix.
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?P<suffix>[eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$"
)
_DURATION = re.compile(r"^(?P<num>\d+(?:\.\d*)?|\.\d+)(?P<unit>us|µs|ms|s)$")
_SI_PREFIXES = ("n", "u", "m", "", "k", "M", "G", "T", "P", "E")
_DECIMAL_SUFFIX = dict(zip(_SI_PREFIXES, range(-9, 19, 3), strict=True))
_BINARY_SUFFIX = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DURATION_US = {"us": Decimal(1), "µs": Decimal(1), "ms": Decimal(1000), "s": Decimal(1_000_000)}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity (\"1500m\", \"2k\", \"1Gi\", \"5e3\") as an exact decimal."""
    match = _QUANTITY.match(text)
    if match is None:
        raise AutoscalingTargetError(f"target {text!r} is not a number or Kubernetes quantity")
    number = Decimal(match["num"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY_SUFFIX:
        return number * (Decimal(2) ** _BINARY_SUFFIX[suffix])
    if suffix[:1] in ("e", "E"):
        return number.scaleb(int(suffix[1:]))
    return number.scaleb(_DECIMAL_SUFFIX[suffix])


def target_value(autoscaling: AutoscalingSpec) -> Decimal:
    """The target as a plain number in the metric's unit.

    queueTime also takes a duration ("50ms", "500us", "0.2s"), which is what people write;
    "50m" stays a Kubernetes quantity (0.05 microseconds), so durations need their unit.
    """
    raw = autoscaling.target
    if isinstance(raw, bool):  # bool is an int; a YAML "yes" is not a target
        raise AutoscalingTargetError(f"target {raw!r} is not a number")
    text = str(raw).strip()
    duration = _DURATION.match(text)
    if duration is not None:
        if autoscaling.metric != "queueTime":
            raise AutoscalingTargetError(
                f"target {text!r} is a duration, which only metric queueTime takes"
            )
        value = Decimal(duration["num"]) * _DURATION_US[duration["unit"]]
    else:
        try:
            value = parse_quantity(text)
        except InvalidOperation as err:
            raise AutoscalingTargetError(f"target {text!r} is not a number") from err
    if value <= 0:
        raise AutoscalingTargetError(f"target {text!r} must be greater than zero")
    if autoscaling.metric == "gpuUtilization" and value > 100:
        raise AutoscalingTargetError(f"target {text!r} is above 100 percent GPU utilization")
    return value


def canonical_quantity(value: Decimal) -> str:
    """The API server's own spelling of a positive decimal quantity ("50k", "500m", "1500").

    The server stores quantities canonically; writing them that way keeps ``kubectl diff`` and
    Argo CD's comparison free of "50000" vs "50k" noise. Sub-nano parts round up, as in
    Kubernetes.
    """
    nanos = (value * 1_000_000_000).to_integral_value(rounding="ROUND_CEILING")
    exponent = -9
    while nanos % 1000 == 0 and exponent < 18:
        nanos //= 1000
        exponent += 3
    suffix = {v: k for k, v in _DECIMAL_SUFFIX.items()}[exponent]
    return f"{nanos}{suffix}"


def plain_number(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros, as KEDA's ``threshold`` parses it."""
    return format(value.normalize(), "f")


def promql(metric: MetricName, namespace: str, deployment: str) -> str:
    """The PromQL KEDA evaluates: one number for all of the Deployment's pods.

    Pods are matched by name (``<deployment>-<replicaset hash>-<suffix>``), which holds for the
    ``namespace``/``pod`` labels both the Prometheus Operator and the common annotation-based
    scrape configs attach. The divisor is clamped so an idle server reads 0, not NaN (an idle
    server must be allowed to scale down).
    """
    # Names are DNS labels, so they need no escaping inside the regular expression.
    selector = f'namespace="{namespace}",pod=~"{deployment}-[a-z0-9]+-[a-z0-9]+"'
    if metric == "queueTime":
        queued = f"sum(rate(nv_inference_queue_duration_us{{{selector}}}[{RATE_WINDOW}]))"
        served = f"sum(rate(nv_inference_request_success{{{selector}}}[{RATE_WINDOW}]))"
        return f"{queued} / clamp_min({served}, 1e-9)"
    if metric == "pendingRequests":
        return f"sum(rate(nv_inference_queue_duration_us{{{selector}}}[{RATE_WINDOW}])) / 1e6"
    return f"avg(nv_gpu_utilization{{{selector}}}) * 100"


def _behavior(autoscaling: AutoscalingSpec) -> dict[str, Any]:
    return {
        "scaleUp": {"stabilizationWindowSeconds": autoscaling.scale_up_stabilization_seconds},
        "scaleDown": {"stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds},
    }


def _scale_target(owner: Owner) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": serving_name(owner.name)}


def render_hpa(owner: Owner, autoscaling: AutoscalingSpec) -> Manifest:
    """autoscaling/v2 HorizontalPodAutoscaler on a Triton Pods metric."""
    if autoscaling.provider != "hpa":
        raise ValueError(f"render_hpa needs provider hpa, not {autoscaling.provider!r}")
    metric = METRICS[autoscaling.metric]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(serving_name(owner.name), owner, common_labels(owner.name, COMPONENT)),
        "spec": {
            "scaleTargetRef": _scale_target(owner),
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric.custom_metric},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": canonical_quantity(target_value(autoscaling)),
                        },
                    },
                }
            ],
            "behavior": _behavior(autoscaling),
        },
    }


def render_scaled_object(owner: Owner, autoscaling: AutoscalingSpec) -> Manifest:
    """KEDA ScaledObject with a prometheus trigger; minReplicaCount 0 scales to zero.

    KEDA's ``cooldownPeriod`` (last activity -> zero replicas) takes the scale-down window, so
    one number in the spec says how long an idle model keeps its pods.
    """
    if autoscaling.provider != "keda":
        raise ValueError(f"render_scaled_object needs provider keda, not {autoscaling.provider!r}")
    metric = METRICS[autoscaling.metric]
    name = serving_name(owner.name)
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": metadata(name, owner, common_labels(owner.name, COMPONENT)),
        "spec": {
            "scaleTargetRef": _scale_target(owner),
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "cooldownPeriod": autoscaling.scale_down_stabilization_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(autoscaling)}},
            "triggers": [
                {
                    "type": "prometheus",
                    "name": autoscaling.metric,
                    "metricType": metric.keda_metric_type,
                    "metadata": {
                        "serverAddress": autoscaling.prometheus_address,
                        "query": promql(autoscaling.metric, owner.namespace, name),
                        "threshold": plain_number(target_value(autoscaling)),
                    },
                }
            ],
        },
    }


def render_autoscaler(owner: Owner, autoscaling: AutoscalingSpec | None) -> Manifest | None:
    """The autoscaler the spec asks for, or None for fixed replicas."""
    if autoscaling is None:
        return None
    if autoscaling.provider == "keda":
        return render_scaled_object(owner, autoscaling)
    return render_hpa(owner, autoscaling)

"""HPA, KEDA ScaledObject and prometheus-adapter rules: golden files plus the rules that hold."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from optiserve.api import AutoscalingSpec, OptimizedModel
from optiserve.api.status import Artifact
from optiserve.render.autoscaling import (
    METRICS,
    AutoscalingTargetError,
    MetricName,
    canonical_quantity,
    promql,
    render_autoscaler,
    render_hpa,
    render_scaled_object,
    target_value,
)
from optiserve.render.deployment import render_deployment
from optiserve.render.job import artifact_uri
from optiserve.render.kubernetes import Owner
from optiserve.render.prometheus_adapter import (
    adapter_rules,
    helm_values,
    render_adapter_config_map,
)

from .golden_files import check_golden_manifest

GOLDEN = Path(__file__).parent / "golden" / "autoscaling"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "autoscaling"
OWNER = Owner(name="minilm", namespace="ml", uid="0b8e3a52-1111-2222-3333-444455556666")
DIGEST = "3f5a9c0e7b1d2468ace013579bdf2468ace013579bdf2468ace013579bdf2468"


def autoscaling(**fields: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate(fields)


def check_golden(name: str, manifest: dict[str, Any]) -> None:
    check_golden_manifest(GOLDEN / name, manifest)


@pytest.mark.parametrize(
    ("golden", "fields"),
    [
        ("hpa-queue-time.yaml", {"maxReplicas": 8, "target": "50ms"}),
        (
            "hpa-pending-requests.yaml",
            {
                "metric": "pendingRequests",
                "target": 4,
                "minReplicas": 2,
                "maxReplicas": 10,
                "scaleUpStabilizationSeconds": 30,
                "scaleDownStabilizationSeconds": 600,
            },
        ),
        ("hpa-gpu-utilization.yaml", {"metric": "gpuUtilization", "target": "70"}),
    ],
)
def test_hpa_golden(golden: str, fields: dict[str, Any]) -> None:
    check_golden(golden, render_hpa(OWNER, autoscaling(**fields)))


def test_scaled_object_golden() -> None:
    spec = autoscaling(
        provider="keda",
        minReplicas=0,
        maxReplicas=6,
        target="20ms",
        prometheusAddress="http://prometheus.monitoring.svc:9090",
    )
    check_golden("scaledobject-queue-time.yaml", render_scaled_object(OWNER, spec))


def test_adapter_config_map_golden() -> None:
    check_golden("prometheus-adapter-configmap.yaml", render_adapter_config_map())


def test_docs_hold_the_rules_the_code_renders() -> None:
    """docs/autoscaling/ is what users copy; it must not drift from the renderer."""
    config_map = yaml.safe_load((DOCS / "prometheus-adapter-configmap.yaml").read_text())
    assert config_map == render_adapter_config_map()
    values = yaml.safe_load((DOCS / "prometheus-adapter-values.yaml").read_text())
    assert values == helm_values()


def test_the_autoscaler_scales_the_deployment_the_deployment_renderer_makes() -> None:
    model = OptimizedModel.model_validate(
        {
            "apiVersion": "optiserve.io/v1alpha1",
            "kind": "OptimizedModel",
            "metadata": {"name": "minilm", "namespace": "ml"},
            "spec": {
                "source": {"uri": "pvc://models/minilm.onnx"},
                "optimization": {"accuracy": {"dataset": "pvc://data/eval.npz"}},
                "serving": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
                "storage": {"pvc": "model-store"},
            },
        }
    )
    uri = artifact_uri(model.spec, DIGEST, namespace=OWNER.namespace, name=OWNER.name)
    artifact = Artifact(digest=DIGEST, uri=uri)
    deployment = render_deployment(OWNER, model.spec, artifact)
    for provider in ("hpa", "keda"):
        scaler = render_autoscaler(OWNER, autoscaling(provider=provider, maxReplicas=3))
        assert scaler is not None
        assert scaler["spec"]["scaleTargetRef"] == {
            "apiVersion": deployment["apiVersion"],
            "kind": deployment["kind"],
            "name": deployment["metadata"]["name"],
        }
        assert scaler["metadata"]["namespace"] == deployment["metadata"]["namespace"]
        assert scaler["metadata"]["ownerReferences"] == deployment["metadata"]["ownerReferences"]
    # The Deployment leaves replicas to the autoscaler: applying it never undoes a scale.
    assert "replicas" not in deployment["spec"]


def test_no_autoscaling_renders_no_autoscaler() -> None:
    assert render_autoscaler(OWNER, None) is None


def test_provider_picks_the_kind() -> None:
    hpa = render_autoscaler(OWNER, autoscaling(provider="hpa"))
    keda = render_autoscaler(OWNER, autoscaling(provider="keda", minReplicas=0))
    assert hpa is not None and hpa["kind"] == "HorizontalPodAutoscaler"
    assert keda is not None and keda["kind"] == "ScaledObject"
    assert keda["apiVersion"] == "keda.sh/v1alpha1"
    assert keda["spec"]["minReplicaCount"] == 0
    with pytest.raises(ValueError, match="provider hpa"):
        render_hpa(OWNER, autoscaling(provider="keda"))
    with pytest.raises(ValueError, match="provider keda"):
        render_scaled_object(OWNER, autoscaling(provider="hpa"))


def test_stabilization_windows_come_from_the_spec() -> None:
    spec = autoscaling(scaleUpStabilizationSeconds=45, scaleDownStabilizationSeconds=900)
    hpa_behavior = render_hpa(OWNER, spec)["spec"]["behavior"]
    keda = render_scaled_object(OWNER, spec.model_copy(update={"provider": "keda"}))
    assert hpa_behavior == {
        "scaleUp": {"stabilizationWindowSeconds": 45},
        "scaleDown": {"stabilizationWindowSeconds": 900},
    }
    assert keda["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa_behavior
    assert keda["spec"]["cooldownPeriod"] == 900


@pytest.mark.parametrize(
    ("metric", "target", "expected"),
    [
        ("queueTime", "50000", Decimal(50000)),
        ("queueTime", 50000, Decimal(50000)),
        ("queueTime", "50ms", Decimal(50000)),
        ("queueTime", "500us", Decimal(500)),
        ("queueTime", "0.2s", Decimal(200000)),
        ("queueTime", "50k", Decimal(50000)),
        ("pendingRequests", "500m", Decimal("0.5")),
        ("pendingRequests", "1.5", Decimal("1.5")),
        ("gpuUtilization", "70", Decimal(70)),
        ("queueTime", "1e3", Decimal(1000)),
        ("queueTime", "1Ki", Decimal(1024)),
    ],
)
def test_target_values(metric: str, target: Any, expected: Decimal) -> None:
    assert target_value(autoscaling(metric=metric, target=target)) == expected


@pytest.mark.parametrize(
    ("metric", "target", "message"),
    [
        ("queueTime", "0", "greater than zero"),
        ("queueTime", "-5", "greater than zero"),
        ("queueTime", "fast", "not a number"),
        ("queueTime", "50 ms", "not a number"),
        ("pendingRequests", "50ms", "only metric queueTime"),
        ("gpuUtilization", "150", "above 100"),
    ],
)
def test_bad_targets_are_refused_with_a_reason(
    metric: MetricName, target: str, message: str
) -> None:
    # The schema refuses these targets now; an object stored before it did still reaches the
    # renderer, which must refuse it with a reason too (hence model_construct: no validation).
    with pytest.raises(ValidationError):
        autoscaling(metric=metric, target=target)
    spec = AutoscalingSpec.model_construct(metric=metric, target=target)
    with pytest.raises(AutoscalingTargetError, match=message):
        render_hpa(OWNER, spec)


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        (Decimal(50000), "50k"),
        (Decimal(1500), "1500"),
        (Decimal(100), "100"),
        (Decimal("0.5"), "500m"),
        (Decimal(2_000_000), "2M"),
        (Decimal("0.0000000001"), "1n"),  # below a nano rounds up, as in Kubernetes
    ],
)
def test_quantities_are_written_as_the_api_server_stores_them(
    value: Decimal, canonical: str
) -> None:
    assert canonical_quantity(value) == canonical


def test_keda_metric_types_follow_what_the_number_means() -> None:
    """A total is divided by the target; an average scales replicas in proportion."""
    for metric, expected in (
        ("queueTime", "Value"),
        ("pendingRequests", "AverageValue"),
        ("gpuUtilization", "Value"),
    ):
        obj = render_scaled_object(OWNER, autoscaling(provider="keda", metric=metric, target=5))
        trigger = obj["spec"]["triggers"][0]
        assert trigger["type"] == "prometheus"
        assert trigger["metricType"] == expected
        # KEDA reads every metadata value as a string and parses threshold as a float.
        assert all(isinstance(v, str) for v in trigger["metadata"].values())
        assert float(trigger["metadata"]["threshold"]) == 5.0


def test_keda_threshold_is_a_plain_number() -> None:
    obj = render_scaled_object(OWNER, autoscaling(provider="keda", target="50ms"))
    assert obj["spec"]["triggers"][0]["metadata"]["threshold"] == "50000"


@pytest.mark.parametrize("metric", ["queueTime", "pendingRequests", "gpuUtilization"])
def test_promql_selects_only_this_deployments_pods(metric: str) -> None:
    query = promql(metric, "ml", "minilm")  # type: ignore[arg-type]
    assert query.count("{") == query.count("}")
    assert query.count("(") == query.count(")")
    assert 'namespace="ml"' in query
    assert 'pod=~"minilm-[a-z0-9]+-[a-z0-9]+"' in query


def test_adapter_serves_every_metric_the_hpa_asks_for() -> None:
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert served == {m.custom_metric for m in METRICS.values()}
    for rule in adapter_rules():
        query = rule["metricsQuery"]
        # Without these the adapter cannot answer per pod.
        assert "<<.LabelMatchers>>" in query and "<<.GroupBy>>" in query
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}

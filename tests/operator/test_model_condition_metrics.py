"""The per-model condition gauge that the chart's alerts read."""

from __future__ import annotations

from prometheus_client import REGISTRY

from optiserve_operator import metrics


def _value(namespace: str, name: str, type_: str) -> float | None:
    labels = {"namespace": namespace, "name": name, "type": type_}
    return REGISTRY.get_sample_value("optiserve_model_condition", labels)


def test_conditions_are_published_as_one_and_zero_and_forgotten_on_delete() -> None:
    metrics.publish_conditions("ns", "m", {"Ready": "False", "Degraded": "True"})
    assert _value("ns", "m", "Degraded") == 1.0
    assert _value("ns", "m", "Ready") == 0.0
    metrics.publish_conditions("ns", "m", {"Ready": "True", "Degraded": "False"})
    assert (_value("ns", "m", "Ready"), _value("ns", "m", "Degraded")) == (1.0, 0.0)
    metrics.forget_model("ns", "m")
    assert _value("ns", "m", "Ready") is None and _value("ns", "m", "Degraded") is None
    metrics.forget_model("ns", "m")  # twice is harmless (a repeated delete event)

"""pendingRequests scales on requests queued on average over a window, not on a sampled gauge.

The gauge (nv_inference_pending_request_count) swings from 0 to several under steady load as
the dynamic batcher drains the queue in bursts, and the HPA on it dropped replicas while the
load held (benchmarks/results/hpa_scaling.md). Both renderings of the signal (the adapter rule
the HPA reads and KEDA's query) must be the rate of Triton's queue-time counter over the rate
window, in seconds per second: by Little's law, the mean number of requests queued.
"""

from __future__ import annotations

from optiserve.render.autoscaling import RATE_WINDOW, promql
from optiserve.render.prometheus_adapter import adapter_rules


def test_the_adapter_rule_averages_the_queue_over_the_window() -> None:
    (rule,) = [r for r in adapter_rules() if r["name"]["as"] == "triton_pending_requests"]
    query = rule["metricsQuery"]
    assert f"rate(nv_inference_queue_duration_us{{<<.LabelMatchers>>}}[{RATE_WINDOW}])" in query
    assert query.endswith("/ 1e6")  # microseconds queued per second -> requests queued
    assert "pending_request_count" not in query + rule["seriesQuery"]
    assert rule["seriesQuery"].startswith("nv_inference_queue_duration_us{")


def test_keda_reads_the_same_signal_for_the_whole_deployment() -> None:
    query = promql("pendingRequests", "ml", "minilm")
    assert query.startswith("sum(rate(nv_inference_queue_duration_us{")
    assert f"[{RATE_WINDOW}])) / 1e6" in query
    assert "pending_request_count" not in query

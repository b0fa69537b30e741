"""The series the autoscaling rules read exist in a real Triton and mean what the rules assume.

A real local tritonserver (the digits CNN, dynamic batching with a 5 ms queue delay) is put
under concurrent load; its /metrics text, parsed with prometheus_client's parser, must hold
every series the prometheus-adapter rules query, and the queue-time rule's arithmetic
(Δ queue µs / Δ successful requests) must give a per-request queue time that is positive under
load and no longer than the whole request. GPU utilization is only checked where a GPU is.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest

from optiserve.api.serving import ServingSpec
from optiserve.render.prometheus_adapter import adapter_rules
from optiserve.serve import LocalTriton
from optiserve.serve.loadgen import run_load
from optiserve_testing import prometheus
from optiserve_testing.example_models import digits_samples
from tests.triton.conftest import BATCHING, MODEL, RepoFactory, digits_model, make_repository

pytestmark = [pytest.mark.triton, pytest.mark.models, pytest.mark.timeout(600)]
__all__ = ["digits_model", "make_repository"]  # fixtures, used by name


@pytest.fixture(scope="module")
def triton(make_repository: RepoFactory) -> Iterator[LocalTriton]:
    serving = ServingSpec(dynamic_batching=BATCHING)
    with LocalTriton(make_repository(serving), serving, startup_timeout_s=120) as server:
        yield server


def scrape(server: LocalTriton) -> dict[str, float]:
    """Every sample of ``MODEL`` (and the model-less GPU series), summed over label sets."""
    return prometheus.scrape(server.metrics_url, MODEL)


def series_of_rules() -> set[str]:
    """The Triton series names the adapter rules query (seriesQuery and metricsQuery)."""
    names: set[str] = set()
    for rule in adapter_rules():
        text = rule["seriesQuery"] + " " + rule["metricsQuery"]
        names |= set(re.findall(r"\b(nv_[a-z_]+)\{", text))
    return names


def test_every_series_the_rules_read_is_exported(triton: LocalTriton) -> None:
    exported = set(scrape(triton))
    wanted = series_of_rules()
    assert "nv_inference_queue_duration_us" in wanted  # the parse above found the rules' names
    missing = wanted - exported
    assert missing <= {"nv_gpu_utilization"}, f"Triton does not export {sorted(missing)}"


def test_queue_time_rule_under_load(triton: LocalTriton) -> None:
    before = scrape(triton)
    pending_seen: list[float] = []
    done = threading.Event()

    def sample_pending() -> None:
        while not done.is_set():
            pending_seen.append(scrape(triton)["nv_inference_pending_request_count"])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample_pending, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        result = run_load(triton.grpc_url, MODEL, digits_samples(64), 16, 480)
    finally:
        elapsed = time.monotonic() - started
        done.set()
        sampler.join(timeout=30)
    after = scrape(triton)

    assert result.errors == 0
    served = after["nv_inference_request_success"] - before["nv_inference_request_success"]
    queued_us = after["nv_inference_queue_duration_us"] - before["nv_inference_queue_duration_us"]
    request_us = (
        after["nv_inference_request_duration_us"] - before["nv_inference_request_duration_us"]
    )
    assert served == 480
    queue_per_request = queued_us / served  # what triton_queue_time_per_request_us reports
    assert 0 < queue_per_request <= request_us / served
    # Requests waited for a batch while 16 clients pushed: the pending gauge saw them, and
    # reads 0 once the load is over (an idle server must be allowed to scale down).
    assert max(pending_seen) > 0
    assert after["nv_inference_pending_request_count"] == 0
    # What the pendingRequests rule reads (Little's law: queue µs per second of wall time / 1e6
    # = requests queued on average) agrees with the gauge's own mean over the same load; the
    # samples are few and the scrape itself competes for the CPU, hence the loose bounds.
    averaged = queued_us / 1e6 / elapsed
    sampled = sum(pending_seen) / len(pending_seen)
    assert averaged > 0
    assert sampled / 3 <= averaged <= sampled * 3, (averaged, sampled)

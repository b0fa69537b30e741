"""How Triton's scaling signals follow load, and what an HPA would do with them.

Serves the digits CNN with a real local tritonserver (CPU, dynamic batching as the spec's
default), runs closed-loop load at rising concurrency and, per level, reads the series the
autoscaling rules use from /metrics, with the rules' own arithmetic:

* queue time per request = Δ nv_inference_queue_duration_us / Δ nv_inference_request_success
  (``triton_queue_time_per_request_us``);
* pending requests = nv_inference_pending_request_count, sampled every 20 ms during the load
  (``triton_pending_requests``; the table shows mean and max).

Then it applies the HPA's rule (desired = ceil(current x value / target), no change within the
10% tolerance) for one pod at the given targets, so the table shows where each target would
start adding pods. Run from the repo root::

    python benchmarks/autoscaling_bench.py --concurrency 1,2,4,8,16,32 --target-queue-us 2000

Numbers depend on the machine (on a shared 2-core box they are noisy); the shape is the
point: queue time and pending requests should rise with concurrency once the server
saturates, while an idle server reads 0.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from optiserve.api.serving import ServingSpec
from optiserve.serve import LocalTriton
from optiserve.serve.loadgen import run_load
from optiserve.serve.repository import write_onnx_model
from optiserve_testing import prometheus
from optiserve_testing.example_models import digits_onnx, digits_samples

MODEL = "digits"
HPA_TOLERANCE = 0.1  # kube-controller-manager's --horizontal-pod-autoscaler-tolerance default


def hpa_desired_replicas(current: int, value: float, target: float, maximum: int = 1000) -> int:
    """The HPA's replica count for a Pods metric averaging ``value`` over ``current`` pods."""
    ratio = value / target
    if abs(ratio - 1.0) <= HPA_TOLERANCE:
        return current
    return max(1, min(maximum, math.ceil(current * ratio)))


def scrape(metrics_url: str) -> dict[str, float]:
    return prometheus.scrape(metrics_url, MODEL)


@dataclass(frozen=True)
class Level:
    concurrency: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    queue_us_per_request: float
    pending_mean: float
    pending_max: float


def measure(triton: LocalTriton, concurrency: int, requests: int) -> Level:
    before = scrape(triton.metrics_url)
    pending: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pending.append(scrape(triton.metrics_url)["nv_inference_pending_request_count"])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run_load(triton.grpc_url, MODEL, digits_samples(64), concurrency, requests)
    finally:
        done.set()
        sampler.join(timeout=30)
    after = scrape(triton.metrics_url)
    served = after["nv_inference_request_success"] - before["nv_inference_request_success"]
    queued = after["nv_inference_queue_duration_us"] - before["nv_inference_queue_duration_us"]
    return Level(
        concurrency=concurrency,
        throughput_rps=result.throughput_rps,
        p50_ms=result.latency_ms["p50"],
        p99_ms=result.latency_ms["p99"],
        queue_us_per_request=queued / max(served, 1.0),
        pending_mean=statistics.fmean(pending) if pending else 0.0,
        pending_max=max(pending, default=0.0),
    )


def table(levels: list[Level], target_queue_us: float, target_pending: float) -> str:
    lines = [
        f"| clients | req/s | p50 ms | p99 ms | queue µs/req | pending mean | pending max "
        f"| HPA pods @ queueTime {target_queue_us:g} | HPA pods @ pending {target_pending:g} |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lv in levels:
        lines.append(
            f"| {lv.concurrency} | {lv.throughput_rps:.0f} | {lv.p50_ms:.2f} | {lv.p99_ms:.2f} "
            f"| {lv.queue_us_per_request:.0f} | {lv.pending_mean:.2f} | {lv.pending_max:.0f} "
            f"| {hpa_desired_replicas(1, lv.queue_us_per_request, target_queue_us)} "
            f"| {hpa_desired_replicas(1, lv.pending_mean, target_pending)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,2,4,8,16,32")
    parser.add_argument("--requests-per-client", type=int, default=40)
    parser.add_argument("--target-queue-us", type=float, default=2000.0)
    parser.add_argument("--target-pending", type=float, default=4.0)
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    levels_wanted = [int(c) for c in args.concurrency.split(",")]

    serving = ServingSpec()
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch)
        write_onnx_model(repository, MODEL, digits_onnx(), serving)
        with LocalTriton(repository, serving, startup_timeout_s=120) as triton:
            idle = scrape(triton.metrics_url)["nv_inference_pending_request_count"]
            levels = [
                measure(triton, c, max(c, c * args.requests_per_client)) for c in levels_wanted
            ]
    text = table(levels, args.target_queue_us, args.target_pending)
    text += f"\n\nidle server: pending requests {idle:g} (scale-down must be possible)\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

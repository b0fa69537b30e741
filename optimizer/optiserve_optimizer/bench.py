"""Latency (p50/p95/p99 at the first batch size) and throughput (at the largest), after warm-up."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.runners import Runner


@dataclass(frozen=True)
class BenchResult:
    latency_batch: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_batch: int
    throughput: float  # samples per second

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _batch(arrays: Mapping[str, npt.NDArray[Any]], size: int) -> dict[str, npt.NDArray[Any]]:
    return {k: np.ascontiguousarray(v[:size]) for k, v in arrays.items()}


def _times(
    runner: Runner, feed: Mapping[str, npt.NDArray[Any]], warmup: int, iterations: int
) -> npt.NDArray[np.float64]:
    for _ in range(warmup):
        runner(feed)
    times = np.empty(iterations)
    for i in range(iterations):
        begun = time.perf_counter()
        runner(feed)
        times[i] = time.perf_counter() - begun
    return times


def benchmark(
    runner: Runner,
    arrays: Mapping[str, npt.NDArray[Any]],
    batch_sizes: Sequence[int],
    warmup: int,
    iterations: int,
) -> BenchResult:
    """``arrays`` must hold at least ``max(batch_sizes)`` samples (checked by the caller)."""
    small, large = batch_sizes[0], max(batch_sizes)
    latency = _times(runner, _batch(arrays, small), warmup, iterations) * 1000.0
    if large == small:
        big = latency / 1000.0
    else:
        big = _times(runner, _batch(arrays, large), max(1, warmup // 2), max(3, iterations // 2))
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    return BenchResult(
        small, float(p50), float(p95), float(p99), large, float(large / np.median(big))
    )

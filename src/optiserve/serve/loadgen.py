"""Real concurrent traffic against a running Triton, and what Triton did with it.

Client-side numbers (throughput, latency percentiles) come from our own clock; server-side
ones (the batch sizes the dynamic batcher formed, cache hits and misses, queue time) come from
Triton's own statistics (``/v2/models/<m>/stats``), as the difference before and after a run.
Loops are bounded by request counts and every call has a network timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve.render.triton import wire_dtype
from optiserve.serve.probe import poll_until

Sample = Mapping[str, npt.NDArray[Any]]  # input name -> array with the batch axis first
CLIENT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServerCounters:
    """Triton's cumulative statistics of one model at one moment."""

    inferences: int = 0  # batch items computed by the model (cache hits excluded)
    executions: int = 0  # model executions (one per batch)
    successes: int = 0  # requests answered (cache hits included)
    cache_hits: int = 0
    cache_misses: int = 0
    request_ns: int = 0  # total time requests spent inside the server (successes)
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_ns: int = 0  # compute_infer: the model itself
    compute_output_ns: int = 0
    cache_hit_ns: int = 0
    cache_miss_ns: int = 0  # lookup + insertion
    batch_executions: Mapping[int, int] = field(default_factory=dict)  # batch size -> times

    def since(self, before: ServerCounters) -> ServerCounters:
        """The counts of what happened between ``before`` and this snapshot."""
        deltas = {
            f.name: getattr(self, f.name) - getattr(before, f.name)
            for f in fields(self)
            if f.name != "batch_executions"
        }
        batches = {
            size: count - before.batch_executions.get(size, 0)
            for size, count in sorted(self.batch_executions.items())
            if count > before.batch_executions.get(size, 0)
        }
        return ServerCounters(**deltas, batch_executions=batches)

    def per_request_ms(self) -> dict[str, float]:
        """Where a request's time inside the server went, on average (milliseconds).

        Triton charges every request of a batch the whole batch's compute time, so this is
        what one request waited for, not the CPU it used.
        """
        if not self.successes:
            return {}
        parts = ("request", "queue", "compute_input", "compute", "compute_output")
        return {p: getattr(self, f"{p}_ns") / self.successes / 1e6 for p in parts}


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    latency_ms: Mapping[str, float]  # p50, p90, p99, mean
    server: ServerCounters

    @property
    def mean_batch_size(self) -> float:
        return self.server.inferences / self.server.executions if self.server.executions else 0.0

    def as_dict(self) -> dict[str, Any]:
        report = asdict(self)
        report["mean_batch_size"] = round(self.mean_batch_size, 2)
        return report


def server_counters(grpc_url: str, model: str) -> ServerCounters:
    """The model's statistics now (all versions summed)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        stats = client.get_inference_statistics(
            model, as_json=True, client_timeout=CLIENT_TIMEOUT_S
        )
    finally:
        client.close()
    total: dict[str, int] = {}
    batches: dict[int, int] = {}
    for version in stats.get("model_stats", []):
        infer = version.get("inference_stats", {})
        for key, value in (
            ("inferences", version.get("inference_count", 0)),
            ("executions", version.get("execution_count", 0)),
            ("cache_hits", infer.get("cache_hit", {}).get("count", 0)),
            ("cache_misses", infer.get("cache_miss", {}).get("count", 0)),
            ("successes", infer.get("success", {}).get("count", 0)),
            ("request_ns", infer.get("success", {}).get("ns", 0)),
            ("queue_ns", infer.get("queue", {}).get("ns", 0)),
            ("compute_input_ns", infer.get("compute_input", {}).get("ns", 0)),
            ("compute_ns", infer.get("compute_infer", {}).get("ns", 0)),
            ("compute_output_ns", infer.get("compute_output", {}).get("ns", 0)),
            ("cache_hit_ns", infer.get("cache_hit", {}).get("ns", 0)),
            ("cache_miss_ns", infer.get("cache_miss", {}).get("ns", 0)),
        ):
            total[key] = total.get(key, 0) + int(value)
        for batch in version.get("batch_stats", []):
            size = int(batch["batch_size"])
            batches[size] = batches.get(size, 0) + int(batch["compute_infer"].get("count", 0))
    return ServerCounters(**total, batch_executions=batches)


STATS_SETTLE_S = 2.0


def settled_counters(
    grpc_url: str, model: str, before: ServerCounters, answered: int
) -> ServerCounters:
    """The counters once the ``answered`` requests since ``before`` are all in them.

    Triton updates a request's statistics just after it sends the response, so a reading
    taken the moment the last answer arrives can miss the last batch (seen: 318 of 320).
    Polls for at most ``STATS_SETTLE_S``, then returns what it has.
    """
    readings: list[ServerCounters] = []

    def settled() -> bool:
        readings.append(server_counters(grpc_url, model))
        return readings[-1].since(before).successes >= answered

    poll_until(settled, STATS_SETTLE_S, 0.02)
    return readings[-1]


def run_load(
    grpc_url: str,
    model: str,
    samples: Sequence[Sample],
    concurrency: int,
    requests: int,
) -> LoadResult:
    """``requests`` inferences from ``concurrency`` closed-loop clients, samples in turn.

    The clients are coroutines on one asyncio gRPC channel: on a small shared CPU that costs
    about half the client CPU per request of one thread per client, so more of the machine is
    left to the server being measured.
    """
    if concurrency < 1 or requests < concurrency or not samples:
        raise ValueError("need concurrency >= 1, requests >= concurrency and some samples")
    before = server_counters(grpc_url, model)
    latencies, errors, seconds = asyncio.run(
        _closed_loop(grpc_url, model, samples, concurrency, requests)
    )
    after = settled_counters(grpc_url, model, before, len(latencies))
    flat = np.array(latencies) * 1000.0
    return LoadResult(
        concurrency=concurrency,
        requests=requests,
        errors=errors,
        seconds=seconds,
        throughput_rps=len(flat) / seconds if seconds else 0.0,
        latency_ms=_percentiles(flat),
        server=after.since(before),
    )


async def _closed_loop(
    grpc_url: str, model: str, samples: Sequence[Sample], concurrency: int, requests: int
) -> tuple[list[float], int, float]:
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(grpc_url)
    prepared = [infer_inputs(grpcclient, sample) for sample in samples]
    latencies: list[float] = []
    errors = 0

    async def client_loop(worker: int) -> None:
        nonlocal errors
        count = requests // concurrency + (1 if worker < requests % concurrency else 0)
        for i in range(count):
            inputs = prepared[(worker + i * concurrency) % len(prepared)]
            began = time.perf_counter()
            try:
                await client.infer(model, inputs, client_timeout=CLIENT_TIMEOUT_S)
            except Exception:  # InferenceServerException, or a transport failure
                errors += 1
                continue
            latencies.append(time.perf_counter() - began)

    try:
        began = time.perf_counter()
        await asyncio.gather(*(client_loop(w) for w in range(concurrency)))
        seconds = time.perf_counter() - began
    finally:
        await client.close()
    return latencies, errors, seconds


def cache_latency(
    grpc_url: str, model: str, samples: Sequence[Sample], repeats: int = 3
) -> dict[str, Any]:
    """Latency of first sight (miss) vs repeats (hits) of the same distinct ``samples``.

    Sequential, one request at a time, so the numbers are the cost of one request. Also
    checks that every cached answer equals the computed one.
    """
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    miss_s: list[float] = []
    hit_s: list[float] = []
    identical = True
    before = server_counters(grpc_url, model)
    try:
        for sample in samples:
            inputs = infer_inputs(grpcclient, sample)
            began = time.perf_counter()
            first = client.infer(model, inputs, client_timeout=CLIENT_TIMEOUT_S)
            miss_s.append(time.perf_counter() - began)
            for _ in range(repeats):
                began = time.perf_counter()
                again = client.infer(model, inputs, client_timeout=CLIENT_TIMEOUT_S)
                hit_s.append(time.perf_counter() - began)
                identical &= _same_outputs(first, again)
    finally:
        client.close()
    answered = len(miss_s) + len(hit_s)
    server = settled_counters(grpc_url, model, before, answered).since(before)
    looked_up = server.cache_hits + server.cache_misses
    repeated = len(samples) * repeats
    miss = _percentiles(np.array(miss_s) * 1000.0)
    hit = _percentiles(np.array(hit_s) * 1000.0)
    return {
        "miss_latency_ms": miss,
        "hit_latency_ms": hit,
        "speedup_p50": miss["p50"] / hit["p50"] if hit["p50"] else 0.0,
        "cache_hits": server.cache_hits,
        "cache_misses": server.cache_misses,
        "hit_rate": server.cache_hits / looked_up if looked_up else 0.0,  # all lookups
        "repeat_hit_rate": server.cache_hits / repeated if repeated else 0.0,
        "server_hit_ms": server.cache_hit_ns / server.cache_hits / 1e6
        if server.cache_hits
        else 0.0,
        "server_miss_compute_ms": server.compute_ns / server.executions / 1e6
        if server.executions
        else 0.0,
        "identical_answers": identical,
    }


def traffic_report(
    grpc_url: str,
    model: str,
    samples: Sequence[Sample],
    concurrency: int = 16,
    requests: int = 512,
    cache_samples: int = 8,
) -> dict[str, Any]:
    """The small report ``make demo`` prints: batching under load, then the cache's effect.

    The last ``cache_samples`` samples are held out of the load, so the cache measurement
    starts with requests the server has never seen (true misses).
    """
    if len(samples) <= cache_samples:
        raise ValueError(f"need more than {cache_samples} samples (some are held out)")
    load = run_load(grpc_url, model, samples[:-cache_samples], concurrency, requests)
    return {
        "model": model,
        "load": load.as_dict(),
        "batch_sizes": dict(load.server.batch_executions),
        "time_in_server_ms": load.server.per_request_ms(),
        "cache": cache_latency(grpc_url, model, samples[-cache_samples:]),
    }


def infer_inputs(grpcclient: Any, sample: Sample) -> list[Any]:
    """One sample as Triton gRPC ``InferInput``s (``grpcclient``: ``tritonclient.grpc``), built
    once and reused for every request; a dtype Triton has no wire name for is a ValueError."""
    inputs = []
    for name, array in sample.items():
        dtype = wire_dtype(array.dtype.name)
        if dtype is None:
            raise ValueError(f"input {name}: dtype {array.dtype} is not supported here")
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(np.ascontiguousarray(array))
        inputs.append(tensor)
    return inputs


def _same_outputs(first: Any, second: Any) -> bool:
    """Bit-identical outputs of two tritonclient results."""
    names = [output.name for output in first.get_response().outputs]
    return all(np.array_equal(first.as_numpy(n), second.as_numpy(n)) for n in names)


def _percentiles(values_ms: npt.NDArray[np.float64]) -> dict[str, float]:
    if values_ms.size == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0}
    p50, p90, p99 = np.percentile(values_ms, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(values_ms.mean()),
    }

"""One measurement window: N requests kept in flight against a running Triton, warm-up excluded.

Closed-loop clients (coroutines on one asyncio gRPC channel, as ``optiserve.serve.loadgen``)
send for ``warmup + window`` seconds; only answers that arrive inside the window count, for
throughput and for the percentiles. Triton's own statistics are read at both edges of the
window (queue, compute input / infer / output per request), and the client's CPU time over
it, so a report can tell a server-bound config from a client-bound one. Every wait is bounded:
each request has a timeout, and so has the whole window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optiserve.serve.loadgen import Sample, ServerCounters, infer_inputs, server_counters

STATS_TIMEOUT_S = 10.0


class LoadFailed(RuntimeError):
    """The window could not be measured (the server stopped answering its statistics)."""


@dataclass(frozen=True)
class Window:
    concurrency: int
    seconds: float
    answered: int
    errors: int
    throughput_rps: float
    latency_ms: dict[str, float]
    server: ServerCounters
    client_cpu_ms_per_request: float
    first_error: str | None = None
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def server_ms(self) -> dict[str, float]:
        """Per request inside Triton: queue, compute input / infer / output (milliseconds)."""
        return {k: round(v, 3) for k, v in self.server.per_request_ms().items()}

    def server_busy_s_per_request(self) -> float:
        """Model-execution time per request (a batch's compute shared by its requests)."""
        s = self.server
        busy = s.compute_input_ns + s.compute_ns + s.compute_output_ns
        # Triton charges each request of a batch the whole batch: per execution, then spread.
        per_execution = busy / s.successes if s.successes else 0.0
        mean_batch = s.inferences / s.executions if s.executions else 1.0
        return per_execution / max(mean_batch, 1.0) / 1e9


def measure_window(
    grpc_url: str,
    model: str,
    samples: Sequence[Sample],
    concurrency: int,
    warmup_s: float,
    window_s: float,
    request_timeout_s: float,
) -> Window:
    """Measures one window; raises ``LoadFailed`` when the server's statistics are gone."""
    if concurrency < 1 or not samples or window_s <= 0:
        raise ValueError("need concurrency >= 1, some samples and a window")
    bound = warmup_s + window_s + request_timeout_s + 2 * STATS_TIMEOUT_S + 5
    try:
        return asyncio.run(
            asyncio.wait_for(
                _window(
                    grpc_url, model, samples, concurrency, warmup_s, window_s, request_timeout_s
                ),
                timeout=bound,
            )
        )
    except TimeoutError as exc:
        raise LoadFailed(f"the measurement did not end within {bound:.0f}s") from exc


def _counters(grpc_url: str, model: str) -> ServerCounters:
    try:
        return server_counters(grpc_url, model)
    except Exception as exc:  # InferenceServerException, or the transport
        raise LoadFailed(f"Triton's statistics could not be read: {exc}"[:500]) from exc


async def _window(
    grpc_url: str,
    model: str,
    samples: Sequence[Sample],
    concurrency: int,
    warmup_s: float,
    window_s: float,
    request_timeout_s: float,
) -> Window:
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(grpc_url)
    prepared = [infer_inputs(grpcclient, sample) for sample in samples]
    began = time.perf_counter()
    opens, closes = began + warmup_s, began + warmup_s + window_s
    answers: list[tuple[float, float]] = []  # (answered at, latency seconds)
    errors: list[str] = []

    async def client_loop(worker: int) -> None:
        index = worker
        while time.perf_counter() < closes:
            sent = time.perf_counter()
            try:
                await client.infer(
                    model, prepared[index % len(prepared)], client_timeout=request_timeout_s
                )
            except Exception as exc:  # InferenceServerException, or a transport failure
                if time.perf_counter() >= opens:
                    errors.append(str(exc))
                await asyncio.sleep(0.01)  # a dead server refuses at once: do not spin
                continue
            finally:
                index += concurrency
            done = time.perf_counter()
            answers.append((done, done - sent))

    workers = [asyncio.create_task(client_loop(w)) for w in range(concurrency)]
    try:
        await asyncio.sleep(max(0.0, opens - time.perf_counter()))
        before = await asyncio.to_thread(_counters, grpc_url, model)
        cpu_before = time.process_time()
        await asyncio.sleep(max(0.0, closes - time.perf_counter()))
        cpu_after = time.process_time()
        after = await asyncio.to_thread(_counters, grpc_url, model)
        _, pending = await asyncio.wait(workers, timeout=request_timeout_s + 1)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await client.close()
    if pending:
        errors.append(f"{len(pending)} requests still unanswered {request_timeout_s:.0f}s after")
    inside = np.array([lat for at, lat in answers if opens <= at <= closes]) * 1000.0
    server = after.since(before)
    return Window(
        concurrency=concurrency,
        seconds=window_s,
        answered=int(inside.size),
        errors=len(errors),
        throughput_rps=inside.size / window_s,
        latency_ms=_percentiles(inside),
        server=server,
        client_cpu_ms_per_request=(cpu_after - cpu_before) * 1000.0 / max(inside.size, 1),
        first_error=errors[0][:300] if errors else None,
        batch_sizes=dict(server.batch_executions),
    )


def _percentiles(values: Any) -> dict[str, float]:
    if values.size == 0:
        return {"p50": 0.0, "p99": 0.0, "mean": 0.0}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "mean": float(values.mean())}

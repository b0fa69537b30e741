"""Local Triton on this CPU: dynamic batching off vs on, response cache hit vs miss.

    python benchmarks/triton_bench.py [--models digits,minilm] [--concurrency 1,2,4,8,16,32,64]

For each model two servers run side by side (same config except the dynamic batcher), and
every concurrency level is measured on both back to back, repeated ``--rounds`` times keeping
the best round of each, so a burst of load from another process on the shared machine hits
both settings alike. A third server has the response cache on. Prints a markdown table,
writes ``benchmarks/results/triton.md`` and ``triton.png``. Loopback only; bounded loops.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiserve.api.serving import (
    DynamicBatchingSpec,
    ResponseCacheSpec,
    ServingSpec,
)
from optiserve.serve import LocalTriton
from optiserve.serve.loadgen import LoadResult, Sample, cache_latency, run_load
from optiserve.serve.repository import write_onnx_model
from optiserve_testing import example_models

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_DIGITS_GAIN_AT_32 = 3.0
TARGET_MINILM_CACHE_SPEEDUP = 10.0


@dataclass(frozen=True)
class Workload:
    name: str
    onnx: Path
    samples: Sequence[Sample]
    requests_per_client: int  # bounded loop: total requests = max(min_requests, c * this)
    min_requests: int


def digits_workload() -> Workload:
    return Workload(
        "digits",
        example_models.digits_onnx(),
        example_models.digits_samples(512),
        requests_per_client=40,
        min_requests=400,
    )


def minilm_workload() -> Workload:
    model, data = example_models.minilm_onnx()
    return Workload(
        "minilm",
        model,
        example_models.minilm_samples(data, 256),
        requests_per_client=4,
        min_requests=48,
    )


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "digits": digits_workload,
    "minilm": minilm_workload,
}


def process_cpu_seconds(process_group: int | None) -> dict[str, float]:
    """CPU seconds so far of this process ("client") and of the server's process group.

    Linux /proc; the python-backend stubs run in the server's process group.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    totals = {"client": usage.ru_utime + usage.ru_stime}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or process_group is None:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == process_group:
            name = "python stub" if "python" in stat[: stat.rindex(")")] else "tritonserver"
            totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def timed_load(
    triton: LocalTriton, workload: Workload, concurrency: int, requests: int
) -> tuple[LoadResult, dict[str, float]]:
    """One load run and the CPU milliseconds per request each process spent on it."""
    before = process_cpu_seconds(triton.pid)
    result = run_load(triton.grpc_url, workload.name, workload.samples, concurrency, requests)
    after = process_cpu_seconds(triton.pid)
    answered = max(result.requests - result.errors, 1)
    return result, {k: (after[k] - before.get(k, 0.0)) * 1000 / answered for k in after}


def serving(batching: bool, cache: bool = False) -> ServingSpec:
    return ServingSpec(
        max_batch_size=64,
        dynamic_batching=DynamicBatchingSpec(enabled=batching),  # default 500 µs queue delay
        response_cache=ResponseCacheSpec(enabled=cache),
    )


def start(workload: Workload, spec: ServingSpec, scratch: Path, label: str) -> LocalTriton:
    repository = scratch / f"{workload.name}-{label}"
    write_onnx_model(repository, workload.name, workload.onnx, spec)
    triton = LocalTriton(repository, spec)
    triton.start()
    return triton


def measure_batching(
    workload: Workload, levels: Sequence[int], rounds: int, scratch: Path
) -> list[dict[str, Any]]:
    off = start(workload, serving(batching=False), scratch, "off")
    try:
        on = start(workload, serving(batching=True), scratch, "on")
        try:
            for triton in (off, on):  # warm both: sessions, arenas, gRPC channels
                run_load(triton.grpc_url, workload.name, workload.samples, 4, 32)
            rows = []
            for concurrency in levels:
                requests = max(workload.min_requests, concurrency * workload.requests_per_client)
                best: dict[str, LoadResult] = {}
                cpu: dict[str, dict[str, float]] = {}
                for _ in range(rounds):
                    for label, triton in (("off", off), ("on", on)):
                        result, cpu_ms = timed_load(triton, workload, concurrency, requests)
                        if label not in best or result.throughput_rps > best[label].throughput_rps:
                            best[label], cpu[label] = result, cpu_ms
                rows.append(
                    {
                        "concurrency": concurrency,
                        "off": best["off"],
                        "on": best["on"],
                        "cpu_ms": cpu,
                    }
                )
                print(
                    f"  {workload.name} c={concurrency:<3} off {best['off'].throughput_rps:8.0f}"
                    f" rps  on {best['on'].throughput_rps:8.0f} rps"
                    f"  (mean batch {best['on'].mean_batch_size:.1f})",
                    flush=True,
                )
            return rows
        finally:
            on.stop()
    finally:
        off.stop()


def measure_cache(workload: Workload, scratch: Path, distinct: int) -> dict[str, Any]:
    with LocalTriton(_cache_repo(workload, scratch), serving(True, cache=True)) as triton:
        # Warm with samples outside the measured set, so the first miss pays no session setup.
        run_load(triton.grpc_url, workload.name, workload.samples[-8:], 2, 8)
        return cache_latency(triton.grpc_url, workload.name, workload.samples[:distinct], repeats=3)


def _cache_repo(workload: Workload, scratch: Path) -> Path:
    repository = scratch / f"{workload.name}-cache"
    write_onnx_model(repository, workload.name, workload.onnx, serving(True, cache=True))
    return repository


def batching_table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"### {name}: dynamic batching off vs on (cache off)",
        "",
        "| concurrency | off req/s | on req/s | gain | off p50 ms | on p50 ms | off p99 ms "
        "| on p99 ms | mean batch (on) | largest batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        off, on = row["off"], row["on"]
        gain = on.throughput_rps / off.throughput_rps if off.throughput_rps else 0.0
        lines.append(
            f"| {row['concurrency']} | {off.throughput_rps:.0f} | {on.throughput_rps:.0f} "
            f"| {gain:.2f}x | {off.latency_ms['p50']:.1f} | {on.latency_ms['p50']:.1f} "
            f"| {off.latency_ms['p99']:.1f} | {on.latency_ms['p99']:.1f} "
            f"| {on.mean_batch_size:.1f} | {max(on.server.batch_executions, default=0)} |"
        )
    return "\n".join(lines)


def time_split_table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"### {name}: where a request's time goes (server-side averages per request, ms)",
        "",
        "| concurrency | batching | client latency p50 | in server | queue | compute input "
        "| model (batch) | compute output | outside server |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for label in ("off", "on"):
            result: LoadResult = row[label]
            split = result.server.per_request_ms()
            if not split:
                continue
            mean = result.latency_ms["mean"]
            lines.append(
                f"| {row['concurrency']} | {label} | {result.latency_ms['p50']:.2f} "
                f"| {split['request']:.2f} | {split['queue']:.2f} | {split['compute_input']:.2f} "
                f"| {split['compute']:.2f} | {split['compute_output']:.2f} "
                f"| {max(mean - split['request'], 0.0):.2f} |"
            )
    return "\n".join(lines)


def cpu_table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"### {name}: CPU milliseconds per request, by process",
        "",
        "| concurrency | batching | client | tritonserver | python stub (onnxruntime) | total |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        for label in ("off", "on"):
            cpu = row["cpu_ms"][label]
            parts = [cpu.get(k, 0.0) for k in ("client", "tritonserver", "python stub")]
            lines.append(
                f"| {row['concurrency']} | {label} | "
                + " | ".join(f"{p:.3f}" for p in parts)
                + f" | {sum(parts):.3f} |"
            )
    return "\n".join(lines)


def cache_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "### Response cache: first request (miss) vs the same request again (hit)",
        "",
        "| model | miss p50 ms | hit p50 ms | speedup (p50) | miss p99 ms | hit p99 ms "
        "| server: model ms (miss) | server: lookup ms (hit) | hit rate of repeats "
        "| identical answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, cache in results.items():
        miss, hit = cache["miss_latency_ms"], cache["hit_latency_ms"]
        lines.append(
            f"| {name} | {miss['p50']:.2f} | {hit['p50']:.2f} | {cache['speedup_p50']:.1f}x "
            f"| {miss['p99']:.2f} | {hit['p99']:.2f} | {cache['server_miss_compute_ms']:.2f} "
            f"| {cache['server_hit_ms']:.3f} | {cache['repeat_hit_rate']:.2f} "
            f"| {cache['identical_answers']} |"
        )
    return "\n".join(lines)


def targets(batching: dict[str, list[dict[str, Any]]], cache: dict[str, dict[str, Any]]) -> str:
    lines = ["### Targets", ""]
    for row in batching.get("digits", []):
        if row["concurrency"] == 32:
            gain = row["on"].throughput_rps / row["off"].throughput_rps
            verdict = "met" if gain >= TARGET_DIGITS_GAIN_AT_32 else "MISSED"
            lines.append(
                f"- digits, batching gain at concurrency 32: {gain:.2f}x "
                f"(target >= {TARGET_DIGITS_GAIN_AT_32:.0f}x): {verdict}"
            )
    if "minilm" in cache:
        speedup = cache["minilm"]["speedup_p50"]
        verdict = "met" if speedup >= TARGET_MINILM_CACHE_SPEEDUP else "MISSED"
        lines.append(
            f"- minilm, cache hit vs miss (p50): {speedup:.1f}x "
            f"(target >= {TARGET_MINILM_CACHE_SPEEDUP:.0f}x): {verdict}"
        )
    return "\n".join(lines)


def plot(batching: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(batching), 2, figsize=(11, 4 * len(batching)), squeeze=False)
    for row_axes, (name, rows) in zip(axes, batching.items(), strict=True):
        levels = [r["concurrency"] for r in rows]
        for label, style in (("off", "o--"), ("on", "s-")):
            row_axes[0].plot(
                levels, [r[label].throughput_rps for r in rows], style, label=f"batching {label}"
            )
            row_axes[1].plot(
                levels, [r[label].latency_ms["p99"] for r in rows], style, label=f"batching {label}"
            )
        for ax, ylabel in zip(row_axes, ("requests / s", "p99 latency (ms)"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels, [str(c) for c in levels])
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{name}: {ylabel}")
            ax.grid(True, alpha=0.3)
            ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,minilm")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32,64")
    parser.add_argument("--rounds", type=int, default=2, help="best of N per setting")
    parser.add_argument("--cache-samples", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS / "triton.md")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    names = [n for n in args.models.split(",") if n]
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")

    load_before = os.getloadavg()
    started = time.time()
    batching: dict[str, list[dict[str, Any]]] = {}
    cache: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="triton-bench-") as scratch:
        for name in names:
            workload = WORKLOADS[name]()
            print(f"{name}: batching off vs on", flush=True)
            batching[name] = measure_batching(workload, levels, args.rounds, Path(scratch))
            print(f"{name}: cache", flush=True)
            cache[name] = measure_cache(workload, Path(scratch), args.cache_samples)

    sections = [
        "## Local Triton benchmark",
        "",
        f"`python benchmarks/triton_bench.py --models {args.models} --concurrency "
        f"{args.concurrency} --rounds {args.rounds}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{os.cpu_count()} CPUs shared with other work (load average {load_before[0]:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after), {platform.machine()}. Triton 2.51 from "
        "nvidia-pytriton, python backend + onnxruntime (1 intra-op thread, 1 instance); "
        "digits: the optimizer's CNN at width 32, 1 image per request; minilm: one 64-token "
        "sentence per request; "
        "gRPC asyncio client on the same machine. Best of the rounds per cell.",
        "",
    ]
    for name, rows in batching.items():
        sections += [batching_table(name, rows), "", cpu_table(name, rows), ""]
    if "minilm" in batching:
        sections += [time_split_table("minilm", batching["minilm"]), ""]
    sections += [cache_table(cache), "", targets(batching, cache), ""]
    sections.append(f"![throughput and p99 latency]({args.out.with_suffix('.png').name})")
    report = "\n".join(sections) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    plot(batching, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

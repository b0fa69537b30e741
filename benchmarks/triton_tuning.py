"""serving.tuning on this CPU: the searched settings against the example spec's hand settings.

    python benchmarks/triton_tuning.py [--models digits,minilm] [--rounds 4] [--window 4]

Per model, on one local ``tritonserver`` (model control explicit, the cache off so the
numbers are the model's):

1. the hand settings of the example spec (examples/digits-pruned-int8.yaml: maxBatchSize 64,
   queue delay 1000 us; examples/minilm-cpu-int8.yaml: 32, 2000 us, preferred 8,16,32) are
   measured at concurrency 16; their median p99 over ``--rounds`` windows is the budget;
2. the search (optiserve_optimizer.tuning) runs with that budget at concurrency 16;
3. hand and tuned are measured interleaved, ``--rounds`` times (hand, tuned, tuned, hand, ...),
   ``--window`` seconds each; the ratio is the median of the per-round throughput ratios,
   with its range.

The throughput bound: CPU seconds one request costs, all of it (this process, the client,
plus tritonserver and its python stubs, read from /proc over the window), against the
machine's CPUs. A config can be no faster than ``cpus / cpu_per_request``; the tuned config's
distance to the bound it measured says how much any setting could still gain here.
Prints a markdown table and writes ``benchmarks/results/triton_tuning.md``. Bounded loops.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiserve.api.serving import ServingSpec
from optiserve.serve import LocalTriton
from optiserve.serve.loadgen import Sample
from optiserve.serve.repository import (
    CONFIG_FILE,
    onnx_signature,
    write_onnx_model,
)
from optiserve_optimizer.machine import cpu_facts, load_average
from optiserve_optimizer.tuning.load import Window, measure_window
from optiserve_optimizer.tuning.runner import search, trial_config_text
from optiserve_optimizer.tuning.space import Config
from optiserve_testing import example_models

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONCURRENCY = 16
TARGET_RATIO = 1.3
BOUND_SHARE = 0.85
RELOAD_SETTLE_S = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Workload:
    name: str
    onnx: Path
    samples: Sequence[Sample]
    hand: dict[str, Any]  # the example spec's serving settings


def digits() -> Workload:
    return Workload(
        "digits",
        example_models.digits_onnx(),
        example_models.digits_samples(64),
        {"maxBatchSize": 64, "dynamicBatching": {"maxQueueDelayMicroseconds": 1000}},
    )


def minilm() -> Workload:
    model, data = example_models.minilm_onnx()
    return Workload(
        "minilm",
        model,
        example_models.minilm_samples(data, 64),
        {
            "maxBatchSize": 32,
            "dynamicBatching": {
                "maxQueueDelayMicroseconds": 2000,
                "preferredBatchSizes": [8, 16, 32],
            },
            "instanceGroup": {"count": 1, "kind": "KIND_CPU"},
        },
    )


WORKLOADS: dict[str, Callable[[], Workload]] = {"digits": digits, "minilm": minilm}


def server_cpu_seconds(pid: int) -> float:
    """utime + stime of tritonserver and every live process in its group (the python stubs),
    plus the server's reaped children (cutime + cstime): a stub that exits when a config is
    reloaded moves its CPU there instead of dropping out of the sum."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid:  # field 5, pgrp (the name and state are cut off)
            total += int(fields[11]) + int(fields[12])
            if int(stat.parent.name) == pid:
                total += int(fields[13]) + int(fields[14])
    return total / CLOCK_TICKS


@dataclass(frozen=True)
class Measured:
    window: Window
    server_cpu_ms_per_request: float

    @property
    def cpu_ms_per_request(self) -> float:
        return self.window.client_cpu_ms_per_request + self.server_cpu_ms_per_request


def load_config(
    triton: LocalTriton, workload: Workload, serving: ServingSpec, config: Config
) -> None:
    import tritonclient.grpc as grpcclient

    local = triton.local_repository
    assert local is not None
    text = trial_config_text(
        workload.name, onnx_signature(workload.onnx), serving, config, "onnxruntime_onnx"
    )
    (local / workload.name / CONFIG_FILE).write_text(text)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        client.load_model(workload.name, client_timeout=120)
    finally:
        client.close()
    time.sleep(RELOAD_SETTLE_S)  # the previous instances' stubs exit and are reaped


def measure(triton: LocalTriton, workload: Workload, window_s: float) -> Measured:
    assert triton.pid is not None
    before = server_cpu_seconds(triton.pid)
    window = measure_window(
        triton.grpc_url, workload.name, workload.samples, CONCURRENCY, 1.0, window_s, 30.0
    )
    # The server's CPU over warm-up and window; scaled to the window's share of requests.
    server = server_cpu_seconds(triton.pid) - before
    share = window_s / (window_s + 1.0)
    per_request = server * share * 1000 / max(window.answered, 1)
    return Measured(window, per_request)


def run_workload(
    workload: Workload, rounds: int, window_s: float, max_seconds: int
) -> dict[str, Any]:
    hand_spec = ServingSpec.model_validate(workload.hand)
    hand = Config(
        hand_spec.max_batch_size,
        tuple(hand_spec.dynamic_batching.preferred_batch_sizes),
        hand_spec.dynamic_batching.max_queue_delay_microseconds,
        hand_spec.instance_group.count,
    )
    with tempfile.TemporaryDirectory(prefix="tuning-bench-") as tmp:
        repository = Path(tmp)
        write_onnx_model(repository, workload.name, workload.onnx, hand_spec)
        with LocalTriton(repository, None, model_control_mode="explicit") as triton:
            load_config(triton, workload, hand_spec, hand)
            first = [measure(triton, workload, window_s) for _ in range(rounds)]
        budget = statistics.median(m.window.latency_ms["p99"] for m in first)
        print(f"{workload.name}: hand p99 at concurrency {CONCURRENCY}: {budget:.2f} ms (budget)")
        tuning = {
            "latencyBudgetMs": round(budget, 3),
            "concurrency": [CONCURRENCY],
            "maxTrials": 12,
            "maxSeconds": max_seconds,
            "trialSeconds": max(1, int(window_s)),
            "warmupSeconds": 1,
        }
        tuned_spec = ServingSpec.model_validate({**workload.hand, "tuning": tuning})
        began = time.monotonic()
        found = search(
            repository,
            workload.name,
            onnx_signature(workload.onnx),
            tuned_spec,
            "onnxruntime_onnx",
            workload.samples,
            print,
        )
        search_s = time.monotonic() - began
        settings = found.summary.settings
        tuned = Config.of(settings) if settings is not None else hand
        pairs: list[tuple[Measured, Measured]] = []
        with LocalTriton(repository, None, model_control_mode="explicit") as triton:
            for index in range(rounds):
                order = [("hand", hand), ("tuned", tuned)]
                if index % 2:
                    order.reverse()
                got: dict[str, Measured] = {}
                for label, config in order:
                    load_config(
                        triton, workload, tuned_spec if label == "tuned" else hand_spec, config
                    )
                    got[label] = measure(triton, workload, window_s)
                pairs.append((got["hand"], got["tuned"]))
                hand_rps, tuned_rps = (got[k].window.throughput_rps for k in ("hand", "tuned"))
                print(
                    f"{workload.name} round {index + 1}: hand {hand_rps:.0f}, tuned {tuned_rps:.0f}"
                )
    return {
        "workload": workload,
        "budget_ms": budget,
        "summary": found.summary,
        "trials": found.trials,
        "search_s": search_s,
        "tuned": tuned,
        "hand": hand,
        "pairs": pairs,
    }


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(results: Sequence[dict[str, Any]], args: argparse.Namespace, before: Any) -> str:
    model, flags = cpu_facts()
    lines = [
        "## serving.tuning against the example specs' hand settings",
        "",
        f"`python benchmarks/triton_tuning.py --models {args.models} --rounds {args.rounds} "
        f"--window {args.window}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"CPU: {model}; {os.cpu_count()} logical CPUs (shared); instruction sets: "
        f"{', '.join(flags) or '-'}; load average before {before[0]}, after {load_average()[0]}. "
        "Triton from nvidia-pytriton, python backend + onnxruntime with 1 intra-op thread per "
        f"instance; closed-loop asyncio gRPC clients at concurrency {CONCURRENCY} in this "
        "process; response cache off; warm-up 1 s excluded from every window.",
        "",
        "Budget = the median p99 of the hand settings at concurrency 16 (measured first). Ratio = "
        "median of per-round tuned/hand throughput, rounds interleaved (hand, tuned, tuned, "
        "hand, ...); range = lowest and highest round. Bound = CPUs / CPU ms per request (client "
        "+ tritonserver + stubs, from /proc) of the tuned config, i.e. the most any setting "
        "could serve here at that cost; CPUs obtained = CPU ms per request x req/s: how much of "
        "the machine the client and server actually got beside the other work on it.",
        "",
        "| model | budget p99 ms | hand settings | tuned settings | trials | search s | "
        "hand req/s | tuned req/s | ratio (range) | hand p99 ms | tuned p99 ms | "
        "CPU ms/req hand / tuned | bound req/s | tuned / bound | CPUs obtained (tuned) |",
        "|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    verdicts = []
    for r in results:
        pairs = r["pairs"]
        ratios = [t.window.throughput_rps / h.window.throughput_rps for h, t in pairs]
        hand_rps = _median([h.window.throughput_rps for h, _ in pairs])
        tuned_rps = _median([t.window.throughput_rps for _, t in pairs])
        hand_cpu = _median([h.cpu_ms_per_request for h, _ in pairs])
        tuned_cpu = _median([t.cpu_ms_per_request for _, t in pairs])
        bound = (os.cpu_count() or 1) * 1000 / tuned_cpu if tuned_cpu else 0.0
        summary = r["summary"]
        lines.append(
            f"| {r['workload'].name} | {r['budget_ms']:.1f} | "
            f"{r['hand'].settings().describe()} | {r['tuned'].settings().describe()} | "
            f"{summary.trials} | {r['search_s']:.0f} | {hand_rps:.0f} | {tuned_rps:.0f} | "
            f"{_median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{_median([h.window.latency_ms['p99'] for h, _ in pairs]):.1f} | "
            f"{_median([t.window.latency_ms['p99'] for _, t in pairs]):.1f} | "
            f"{hand_cpu:.2f} / {tuned_cpu:.2f} | {bound:.0f} | "
            f"{tuned_rps / bound if bound else 0:.2f} | {tuned_cpu * tuned_rps / 1000:.2f} |"
        )
        ratio_met = _median(ratios) >= TARGET_RATIO
        bound_met = bound > 0 and tuned_rps >= BOUND_SHARE * bound
        verdicts.append(
            f"- {r['workload'].name}: ratio {_median(ratios):.2f}x (target >= {TARGET_RATIO}x): "
            f"{'met' if ratio_met else 'missed'}; tuned at {tuned_rps / bound if bound else 0:.0%}"
            f" of the CPU bound (target >= {BOUND_SHARE:.0%}): {'met' if bound_met else 'missed'}."
            f" Search: {summary.outcome}, {summary.message}"
            + (
                " The search kept the hand settings: both columns are the same config, so the"
                " ratio and its range measure this machine's noise (an A/A comparison)."
                if r["tuned"] == r["hand"]
                else ""
            )
        )
    lines += ["", *verdicts, "", "### Trials of the search", ""]
    for r in results:
        lines += [
            f"{r['workload'].name}:",
            "",
            "| trial | settings | req/s | p50 ms | p99 ms | within budget | mean batch | queue ms |"
            " infer ms | client CPU ms/req | note |",
            "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        for number, t in enumerate(r["trials"], 1):
            d = t.details
            within = "yes" if t.failure is None and t.p99_ms <= r["budget_ms"] else "no"
            lines.append(
                f"| {number} | {t.config.settings().describe()} | {t.throughput_rps:.0f} | "
                f"{t.p50_ms:.1f} | {t.p99_ms:.1f} | {within} | {d.get('meanBatch', '-')} | "
                f"{d.get('queueMs', '-')} | {d.get('computeInferMs', '-')} | "
                f"{d.get('clientCpuMsPerRequest', '-')} | {t.failure or ''} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--max-seconds", type=int, default=240)
    args = parser.parse_args()
    before = load_average()
    results = [
        run_workload(WORKLOADS[name](), args.rounds, args.window, args.max_seconds)
        for name in args.models.split(",")
    ]
    text = report(results, args, before)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "triton_tuning.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

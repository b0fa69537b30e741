"""One measurement method for every speed figure optiserve prints, and the rule that picks.

How runners are timed (``measure``):

* every runner (the baselines and every candidate) is built first and kept; each is warmed up
  at every batch size it will be timed at, and warm-up calls are never counted;
* then ``rounds`` rounds run; in each round every runner makes ``ceil(iterations / rounds)``
  calls at the latency batch (the first batch size) and at the throughput batch (the
  largest), more when calls are short, enough to fill ``MIN_ROUND_SECONDS``; those calls are
  cut into ``SLICES`` slices and the runners take turns slice by slice (round-robin, the
  starting runner rotating each round), so a busy second on a shared machine slows every
  runner alike instead of whichever happened to run then;
* the intra-op thread count is fixed (``OPTISERVE_THREADS``, set explicitly on onnxruntime
  sessions and torch) and recorded with the CPU model, its instruction sets from
  ``/proc/cpuinfo`` and the load average before and after (``Conditions``);
* the clock: with one intra-op thread every runner computes on the calling thread, and the
  process's CPU time (``cpu``) is what is timed: on a shared machine a 5 ms call is
  preempted far more often than a 0.1 ms one, which skews wall-clock ratios with the load
  (at load 14 on 2 cores, the digits CNN's TorchScript throughput per round ranged over
  3,100-17,200/s by the wall clock and 13,300-14,700/s by CPU time). With more threads the
  work is spread over a pool, so the wall clock (``wall``) is timed and a busy machine shows
  in the spread.

A runner's throughput is the median over rounds of ``batch / median call time`` in that round;
a speedup is the per-round ratio of two runners' throughputs, reported as the median over
rounds with its spread (min-max and interquartile range, ``Spread``).

The decision rule (``choose``), for candidates that passed the accuracy gate:

1. A is *clearly faster* than B when the lower quartile over rounds of A's throughput divided
   by B's (same round) is above ``1 + MARGIN`` (5 %): A beat B by more than the margin in at
   least three rounds out of four, so the noise of one round cannot make a winner.
2. Candidates that some other candidate is clearly faster than are out.
3. Among the rest (equally fast within the noise) the most accurate (smallest accuracy drop)
   wins, then the simplest (fewest steps), then the higher median throughput, then the name.

So a candidate that is 1 % faster but less accurate than ``fp32`` does not win, and two runs
on the same machine pick the same candidate unless the machine really changed.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.machine import cpu_facts, load_average

Feed = Mapping[str, npt.NDArray[Any]]
Runner = Callable[[Feed], Any]
Clock = Literal["wall", "cpu"]
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}

MARGIN = 0.05
MIN_ROUND_SECONDS = 0.05  # per runner, batch size and round: short calls are repeated
MAX_CALLS = 2000
SLICES = 10  # each round interleaves the runners in this many slices


# ---------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Conditions:
    """What a figure was measured under; printed beside it and kept in the report."""

    cpu: str
    instruction_sets: tuple[str, ...]
    logical_cpus: int
    threads: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    rounds: int
    per_round: int  # the least calls per runner, batch size and round
    warmup: int
    latency_batch: int
    throughput_batch: int
    device: str = "cpu"
    gpu: str = ""  # the GPU's name when a runner could use one (a gpu target that torch sees)
    started: str = ""
    min_round_seconds: float = 0.0  # short calls are repeated to fill this
    clock: str = "wall"

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "instructionSets": list(self.instruction_sets),
            "logicalCpus": self.logical_cpus,
            "threads": self.threads,
            "loadBefore": list(self.load_before),
            "loadAfter": list(self.load_after),
            "rounds": self.rounds,
            "perRound": self.per_round,
            "minRoundSeconds": self.min_round_seconds,
            "clock": self.clock,
            "warmup": self.warmup,
            "latencyBatch": self.latency_batch,
            "throughputBatch": self.throughput_batch,
            "device": self.device,
            "gpu": self.gpu,
            "started": self.started,
        }

    def line(self) -> str:
        """One line for logs, READMEs and benchmark tables."""
        return (
            (f"GPU {self.gpu}; " if self.gpu else "")
            + f"{self.cpu}, {self.logical_cpus} logical CPUs, "
            f"{' '.join(self.instruction_sets) or 'no listed SIMD flags'}; "
            f"{self.threads} intra-op thread(s), {self.clock} clock; "
            f"load {self.load_before[0]:.2f} before, "
            f"{self.load_after[0]:.2f} after; {self.rounds} interleaved rounds x "
            f">={self.per_round} calls (>={self.min_round_seconds:g} s), batch "
            f"{self.latency_batch} and {self.throughput_batch}"
        )


def visible_gpu(device: str) -> str:
    """The name of the GPU a ``gpu`` target's runners can use ("" for a CPU target, or where
    torch sees no CUDA device): GPU figures are recorded with the card they were measured on.
    Where the baselines run decides it (``runners.torch_device``), so the two cannot disagree."""
    from optiserve_optimizer.runners import torch_device

    if torch_device(device) != "cuda":
        return ""
    import torch

    return str(torch.cuda.get_device_name(0))


# ---------------------------------------------------------------------------- spread maths


@dataclass(frozen=True)
class Spread:
    """A statistic over rounds: the median with its min-max and interquartile range."""

    median: float
    low: float
    high: float
    q1: float
    q3: float
    rounds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread needs at least one value")
        q1, median, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
        return cls(median, float(min(values)), float(max(values)), q1, q3, len(values))

    def ratio_text(self) -> str:
        return f"{self.median:.2f}x"

    def range_text(self) -> str:
        return f"{self.low:.2f}x-{self.high:.2f}x"

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": round(self.median, 4),
            "min": round(self.low, 4),
            "max": round(self.high, 4),
            "q1": round(self.q1, 4),
            "q3": round(self.q3, 4),
            "rounds": self.rounds,
        }


def round_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-round ratios of two runners timed in the same rounds."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(
            f"ratios need the same, non-zero number of rounds ({len(numerator)} vs "
            f"{len(denominator)})"
        )
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def clearly_faster(a: Sequence[float], b: Sequence[float], margin: float = MARGIN) -> bool:
    """Throughputs ``a`` beat ``b`` beyond the noise: lower quartile of a/b above 1 + margin."""
    return float(np.percentile(round_ratios(a, b), 25)) > 1.0 + margin


# ---------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Contender:
    """What the decision needs of a candidate that passed the gate."""

    name: str
    round_throughput: tuple[float, ...]
    accuracy_drop: float
    steps: int

    @property
    def throughput(self) -> float:
        return statistics.median(self.round_throughput)


@dataclass(frozen=True)
class Decision:
    chosen: Contender
    reasons: dict[str, str] = field(default_factory=dict)  # every contender's verdict


def choose(contenders: Sequence[Contender], margin: float = MARGIN) -> Decision | None:
    """The winner by the module's rule (see the docstring), with a reason for everyone."""
    if not contenders:
        return None
    beaten_by: dict[str, Contender] = {}  # the fastest contender clearly faster than each
    for c in contenders:
        faster = [
            o
            for o in contenders
            if o is not c and clearly_faster(o.round_throughput, c.round_throughput, margin)
        ]
        if faster:
            beaten_by[c.name] = max(faster, key=lambda o: o.throughput)
    front = [c for c in contenders if c.name not in beaten_by] or list(contenders)
    ranked = sorted(front, key=lambda c: (c.accuracy_drop, c.steps, -c.throughput, c.name))
    chosen = ranked[0]
    reasons: dict[str, str] = {}
    ties = [c.name for c in ranked[1:]]
    reasons[chosen.name] = (
        f"fastest beyond the noise (margin {margin:.0%})"
        if not ties
        else f"as fast as {', '.join(ties)} within the noise (margin {margin:.0%}); "
        + _why_preferred(chosen, ranked[1])
    )
    for c in contenders:
        if c is chosen:
            continue
        if c.name in beaten_by:
            winner = beaten_by[c.name]
            ratio = Spread.of(round_ratios(winner.round_throughput, c.round_throughput))
            reasons[c.name] = (
                f"{winner.name} is faster beyond the noise "
                f"({ratio.ratio_text()}, {ratio.range_text()} over {ratio.rounds} rounds)"
            )
        else:
            reasons[c.name] = f"as fast as {chosen.name} within the noise; " + _why_preferred(
                chosen, c
            )
    return Decision(chosen, reasons)


def _why_preferred(winner: Contender, other: Contender) -> str:
    if winner.accuracy_drop != other.accuracy_drop:
        return (
            f"{winner.name} is more accurate (drop {winner.accuracy_drop:.4g} vs "
            f"{other.accuracy_drop:.4g})"
        )
    if winner.steps != other.steps:
        return f"{winner.name} is simpler ({winner.steps} steps vs {other.steps})"
    return f"{winner.name} has the higher median throughput"


# ---------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class RunnerTiming:
    """One runner's calls: every latency-batch call time, and throughput per round."""

    latency_batch: int
    throughput_batch: int
    latency_ms: tuple[float, ...]
    round_throughput: tuple[float, ...]  # samples per second, one per round

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q))

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def throughput(self) -> float:
        return statistics.median(self.round_throughput)

    def as_dict(self) -> dict[str, Any]:
        spread = Spread.of(self.round_throughput)
        return {
            "latencyBatch": self.latency_batch,
            "p50Ms": round(self.p50_ms, 4),
            "p95Ms": round(self.percentile_ms(95), 4),
            "p99Ms": round(self.percentile_ms(99), 4),
            "throughputBatch": self.throughput_batch,
            "throughput": round(self.throughput, 2),
            "throughputRounds": [round(t, 2) for t in self.round_throughput],
            "throughputSpread": f"{spread.low:.1f}-{spread.high:.1f}",
        }


@dataclass(frozen=True)
class Measurement:
    timings: dict[str, RunnerTiming]
    conditions: Conditions

    def speedup(self, name: str, baseline: str) -> Spread:
        """``name``'s throughput over ``baseline``'s, per round."""
        return Spread.of(
            round_ratios(
                self.timings[name].round_throughput, self.timings[baseline].round_throughput
            )
        )


def _batch(arrays: Feed, size: int) -> dict[str, npt.NDArray[Any]]:
    return {k: np.ascontiguousarray(v[:size]) for k, v in arrays.items()}


def pick_clock(threads: int) -> Clock:
    """``cpu`` with one intra-op thread, else ``wall`` (see the module docstring)."""
    return "cpu" if threads == 1 else "wall"


def _timed(runner: Runner, feed: Feed, calls: int, clock: Clock) -> list[float]:
    now = CLOCKS[clock]
    times = []
    for _ in range(calls):
        begun = now()
        runner(feed)
        times.append(now() - begun)
    return times


def _calls(runner: Runner, feed: Feed, warmup: int, at_least: int, clock: Clock) -> int:
    """Warms ``runner`` up on ``feed`` (never counted) and returns how many calls a round
    needs: ``at_least``, and enough to fill ``MIN_ROUND_SECONDS`` (a 50 us call timed ten
    times is mostly timer and scheduler noise)."""
    times = _timed(runner, feed, max(1, warmup), clock)
    typical = statistics.median(times)
    wanted = math.ceil(MIN_ROUND_SECONDS / typical) if typical > 0 else MAX_CALLS
    return max(at_least, min(MAX_CALLS, wanted))


def _share(calls: int, piece: int) -> int:
    """How many of ``calls`` the ``piece``-th of ``SLICES`` slices makes (they sum to it)."""
    return calls * (piece + 1) // SLICES - calls * piece // SLICES


def measure(
    runners: Mapping[str, Runner],
    arrays: Feed,
    batch_sizes: Sequence[int],
    *,
    warmup: int,
    iterations: int,
    rounds: int,
    threads: int,
    device: str = "cpu",
    clock: Clock | None = None,
) -> Measurement:
    """Times ``runners`` interleaved (see the module docstring); ``arrays`` must hold at least
    ``max(batch_sizes)`` samples. ``iterations`` are spread over the rounds (at least one
    call per runner, batch size and round)."""
    if not runners:
        raise ValueError("nothing to measure")
    if rounds < 1:
        raise ValueError("measure needs at least one round")
    small_size, large_size = batch_sizes[0], max(batch_sizes)
    small, large = _batch(arrays, small_size), _batch(arrays, large_size)
    per_round = max(1, math.ceil(iterations / rounds))
    clock = clock or pick_clock(threads)
    cpu, flags = cpu_facts()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = load_average()
    names = list(runners)
    small_calls = {n: _calls(runners[n], small, warmup, per_round, clock) for n in names}
    large_calls = {n: _calls(runners[n], large, warmup, per_round, clock) for n in names}
    latency: dict[str, list[float]] = {n: [] for n in names}
    throughput: dict[str, list[float]] = {n: [] for n in names}
    for index in range(rounds):
        start = index % len(names)
        order = names[start:] + names[:start]
        small_times: dict[str, list[float]] = {n: [] for n in names}
        large_times: dict[str, list[float]] = {n: [] for n in names}
        # Each runner's calls of the round are cut into SLICES pieces and the pieces of all
        # runners alternate, so they share whatever the machine did during the round.
        for piece in range(SLICES):
            for name in order:
                small_times[name] += _timed(
                    runners[name], small, _share(small_calls[name], piece), clock
                )
                if large_size != small_size:
                    large_times[name] += _timed(
                        runners[name], large, _share(large_calls[name], piece), clock
                    )
        for name in names:
            timed_large = large_times[name] if large_size != small_size else small_times[name]
            latency[name] += [t * 1000.0 for t in small_times[name]]
            throughput[name].append(large_size / statistics.median(timed_large))
    conditions = Conditions(
        cpu=cpu,
        instruction_sets=flags,
        logical_cpus=os.cpu_count() or 1,
        threads=threads,
        load_before=load_before,
        load_after=load_average(),
        rounds=rounds,
        per_round=per_round,
        warmup=max(1, warmup),
        min_round_seconds=MIN_ROUND_SECONDS,
        clock=clock,
        latency_batch=small_size,
        throughput_batch=large_size,
        device=device,
        gpu=visible_gpu(device),
        started=started,
    )
    timings = {
        n: RunnerTiming(small_size, large_size, tuple(latency[n]), tuple(throughput[n]))
        for n in names
    }
    return Measurement(timings, conditions)

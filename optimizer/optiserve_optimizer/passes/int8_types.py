"""INT8 static types chosen by measurement: activation type, weight type, per-channel scales.

Which integer kernels are fast depends on the CPU and on the model's operators. On x86,
onnxruntime's int8 GEMM/Conv kernels are built around unsigned activations times signed
weights (U8S8: AVX2's vpmaddubsw and AVX512/AVX-VNNI's vpdpbusd multiply u8 by s8); signed
activations (S8S8) take other paths whose speed varies by CPU, ISA and op, and made ResNet-18's
INT8 slower than FP32 on one AVX2 machine while U8S8 was 3.25x faster with the same predictions.
So no constant is right everywhere: each candidate combination is quantized, run on a small
calibration slice, timed interleaved with the others and with FP32, and the fastest whose
outputs match FP32 as well as the most faithful combination's is kept (a combination
displaces the preferred one only when it is faster beyond the noise). The choice, the timings
and the CPU's instruction sets go into the pass metrics.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve_optimizer import machine

ROUNDS = 7
MIN_ROUND_SECONDS = 0.02  # each round runs a candidate at least this long (timer resolution)
MAX_REPEATS = 50
# A combination "matches" when its error is within this factor of the most faithful one's
# (or under the floor, where every combination is near exact).
MATCH_FACTOR = 1.5
MATCH_FLOOR = 0.01
WIN_SHARE = 0.85  # of the paired rounds a challenger must win (6 of 7)


@dataclass(frozen=True)
class TypeChoice:
    activation: str  # onnxruntime QuantType name: QUInt8 or QInt8
    weight: str
    per_channel: bool

    @property
    def label(self) -> str:
        short = {"QUInt8": "U8", "QInt8": "S8"}
        scales = "per-channel" if self.per_channel else "per-tensor"
        return f"{short[self.activation]}{short[self.weight]}-{scales}"


# In order of preference when timings tie: per-channel scales are the more faithful, U8S8 is
# onnxruntime's usual CPU pairing. Weights stay signed: no fast u8 x u8 path on x86, and
# TensorRT needs s8.
CANDIDATES = (
    TypeChoice("QUInt8", "QInt8", per_channel=True),
    TypeChoice("QInt8", "QInt8", per_channel=True),
    TypeChoice("QUInt8", "QInt8", per_channel=False),
)
# GPU targets (TensorRT, CUDA) read signed int8 QDQ; a CPU timing says nothing there. Before a
# TensorRT build the activations are also symmetric (zero-point 0): the quantize step's
# ``symmetric`` setting, which the plan sets on that step.
GPU_CHOICE = TypeChoice("QInt8", "QInt8", per_channel=True)


def cpu_facts() -> dict[str, Any]:
    """CPU model, the instruction sets that decide int8 kernels, cores and load (the same
    reading of /proc/cpuinfo as every measurement's, optiserve_optimizer.machine)."""
    model, isa = machine.cpu_facts()
    return {
        "model": model,
        "isa": list(isa),
        "logicalCpus": os.cpu_count(),
        "loadAverage1m": round(machine.load_average()[0], 2),
    }


def relative_error(reference: Sequence[npt.NDArray[Any]], got: Sequence[npt.NDArray[Any]]) -> float:
    """Mean |difference| over mean |reference|, the worst over the outputs."""
    worst = 0.0
    for ref, out in zip(reference, got, strict=True):
        scale = float(np.mean(np.abs(ref))) or 1.0
        diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
        worst = max(worst, float(np.mean(diff)) / scale)
    return worst


def time_interleaved(runners: Mapping[str, Any], rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Milliseconds per run of each runner, one figure per round, runners taken round-robin.

    The starting runner rotates every round, so a drift in machine load (other processes,
    frequency changes) falls on every runner alike instead of on whichever ran last.
    """
    names = list(runners)
    repeats: dict[str, int] = {}
    for name in names:
        runners[name]()  # first run: allocations, kernel selection
        begun = time.perf_counter()
        runners[name]()
        once = max(time.perf_counter() - begun, 1e-6)
        repeats[name] = max(1, min(MAX_REPEATS, math.ceil(MIN_ROUND_SECONDS / once)))
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            begun = time.perf_counter()
            for _ in range(repeats[name]):
                runners[name]()
            times[name].append((time.perf_counter() - begun) * 1000.0 / repeats[name])
    return times


def beats(challenger: Sequence[float], incumbent: Sequence[float]) -> bool:
    """Faster beyond the noise: lower median, and faster in nearly every paired round.

    Rounds are paired (interleaved, adjacent in time), so a sign test applies: winning at
    least 6 of 7 rounds happens by chance 6% of the time when the two are equally fast.
    """
    wins = sum(c < i for c, i in zip(challenger, incumbent, strict=True))
    faster = float(np.median(challenger)) < float(np.median(incumbent))
    return faster and wins >= math.ceil(WIN_SHARE * len(incumbent))


def pick(
    errors: Mapping[str, float], times: Mapping[str, Sequence[float]]
) -> tuple[str, list[str]]:
    """The chosen label, and the labels whose outputs match, in order of preference.

    ``errors`` is in order of preference (most faithful and most common first). The first
    matching label is kept unless others are faster beyond the noise; then the fastest of those.
    """
    best = min(errors.values())
    allowed = max(best * MATCH_FACTOR, MATCH_FLOOR)
    matching = [label for label, error in errors.items() if error <= allowed]
    default = matching[0]
    challengers = [m for m in matching[1:] if beats(times[m], times[default])]
    if not challengers:
        return default, matching
    return min(challengers, key=lambda m: float(np.median(times[m]))), matching


def summarize(times: Sequence[float]) -> dict[str, Any]:
    values = np.asarray(times)
    return {
        "medianMs": round(float(np.median(values)), 4),
        "minMs": round(float(values.min()), 4),
        "maxMs": round(float(values.max()), 4),
        "roundsMs": [round(float(v), 4) for v in values],
    }

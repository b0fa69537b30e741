"""The measurement method: spread maths, the decision rule, and an interleaved measurement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve_optimizer import measure as measure_module
from optiserve_optimizer.machine import parse_cpuinfo
from optiserve_optimizer.measure import (
    MARGIN,
    Contender,
    Spread,
    choose,
    clearly_faster,
    measure,
    round_ratios,
)
from optiserve_optimizer.runners import onnx_runner
from tests.optimizer.conftest import make_mlp

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni amx_tile amx_int8 avx512_bf16

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu
"""


def test_spread_is_median_min_max_and_quartiles() -> None:
    spread = Spread.of([2.0, 1.0, 3.0, 5.0, 4.0])
    assert (spread.median, spread.low, spread.high) == (3.0, 1.0, 5.0)
    assert (spread.q1, spread.q3, spread.rounds) == (2.0, 4.0, 5)
    assert spread.ratio_text() == "3.00x" and spread.range_text() == "1.00x-5.00x"
    with pytest.raises(ValueError):
        Spread.of([])


def test_ratios_pair_rounds_and_refuse_unequal_rounds() -> None:
    assert round_ratios([4.0, 9.0], [2.0, 3.0]) == [2.0, 3.0]
    with pytest.raises(ValueError, match="same, non-zero number of rounds"):
        round_ratios([1.0, 2.0], [1.0])


def test_clearly_faster_needs_the_lower_quartile_above_the_margin() -> None:
    base = [100.0] * 5
    assert clearly_faster([110.0, 112.0, 108.0, 111.0, 109.0], base)
    assert not clearly_faster([101.0, 102.0, 100.5, 103.0, 101.0], base)  # 1-3 %: noise
    # one lucky round does not make a winner
    assert not clearly_faster([150.0, 100.0, 99.0, 101.0, 100.0], base)
    # a shared slow round is cancelled by the per-round pairing
    assert clearly_faster([120.0, 60.0, 121.0, 119.0, 118.0], [100.0, 50.0, 100.0, 100.0, 100.0])
    assert MARGIN == 0.05


def contender(name: str, throughput: float, drop: float = 0.0, steps: int = 2) -> Contender:
    jitter = (0.99, 1.01, 1.0, 0.995, 1.005)
    return Contender(name, tuple(throughput * j for j in jitter), drop, steps)


def test_the_clearly_fastest_wins_whatever_its_accuracy() -> None:
    decision = choose([contender("fp32", 100), contender("int8", 300, drop=0.004, steps=3)])
    assert decision is not None and decision.chosen.name == "int8"
    assert decision.reasons["int8"].startswith("fastest beyond the noise")
    assert "int8 is faster beyond the noise (3.00x" in decision.reasons["fp32"]


def test_within_the_noise_the_more_accurate_then_the_simpler_wins() -> None:
    gru = choose([contender("fp32", 100.0), contender("int8", 101.5, drop=0.002, steps=3)])
    assert gru is not None and gru.chosen.name == "fp32"
    assert "fp32 is more accurate" in gru.reasons["int8"]
    same_drop = choose(
        [contender("pruned+int8", 103.0, steps=5), contender("int8", 101.0, steps=3)]
    )
    assert same_drop is not None and same_drop.chosen.name == "int8"
    assert "int8 is simpler (3 steps vs 5)" in same_drop.reasons["pruned+int8"]


def test_a_clearly_slower_accurate_candidate_does_not_win() -> None:
    decision = choose(
        [
            contender("fp32", 100.0),
            contender("int8", 200.0, drop=0.01, steps=3),
            contender("pruned+int8", 204.0, drop=0.005, steps=5),
        ]
    )
    assert decision is not None and decision.chosen.name == "pruned+int8"
    assert "as fast as int8 within the noise" in decision.reasons["pruned+int8"]
    assert choose([]) is None


def test_interleaved_measurement_rotates_runners_and_records_conditions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(measure_module, "MIN_ROUND_SECONDS", 0.0)  # exact call counts
    calls: list[tuple[str, int]] = []

    def recording(name: str, runner: Any) -> Any:
        def run(feed: Any) -> Any:
            calls.append((name, len(feed["input"])))
            return runner(feed)

        return run

    model = make_mlp(tmp_path / "mlp.onnx", sizes=(16, 64, 10))
    arrays = {"input": np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)}
    runners = {name: recording(name, onnx_runner(model)) for name in ("a", "b", "c")}
    result = measure(runners, arrays, [1, 8], warmup=2, iterations=6, rounds=3, threads=1)

    warm = 3 * 2 * 2  # three runners, two batch sizes, two warm-up calls
    timed = calls[warm:]
    per_round = 2  # ceil(6 iterations / 3 rounds)
    assert len(timed) == 3 * 3 * 2 * per_round
    firsts = [timed[i * 3 * 2 * per_round][0] for i in range(3)]
    assert firsts == ["a", "b", "c"]  # the first runner rotates every round
    assert {size for _, size in timed} == {1, 8}

    calls.clear()  # 20 calls per round: the runners take turns in slices within a round
    measure(runners, arrays, [1, 8], warmup=1, iterations=60, rounds=3, threads=1)
    first_round = [name for name, _ in calls[3 * 2 : 3 * 2 + 3 * 2 * 20]]
    assert first_round[:4] == ["a"] * 4 and first_round[4:8] == ["b"] * 4
    assert first_round[12:16] == ["a"] * 4  # a again before the round ends
    assert sorted(set(first_round)) == ["a", "b", "c"] and len(first_round) == 120

    conditions = result.conditions
    assert conditions.threads == 1 and conditions.rounds == 3 and conditions.per_round == 2
    assert conditions.cpu and conditions.logical_cpus >= 1
    assert all(v >= 0 for v in conditions.load_before + conditions.load_after)
    assert (conditions.latency_batch, conditions.throughput_batch) == (1, 8)
    assert "1 intra-op thread(s)" in conditions.line()
    timing = result.timings["b"]
    assert len(timing.round_throughput) == 3 and len(timing.latency_ms) == 3 * per_round
    spread = result.speedup("b", "a")
    assert spread.rounds == 3 and spread.low <= spread.median <= spread.high
    assert result.speedup("a", "a").median == pytest.approx(1.0)
    details = timing.as_dict()
    assert len(details["throughputRounds"]) == 3 and details["p50Ms"] > 0


def test_cpu_model_and_instruction_sets_come_from_cpuinfo() -> None:
    model, flags = parse_cpuinfo(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == (
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_int8",
    )
    arm_model, arm_flags = parse_cpuinfo("CPU part\t: 0xd0c\nFeatures\t: fp asimd asimddp i8mm\n")
    assert arm_model == "" and arm_flags == ("asimd", "asimddp", "i8mm")


def test_slices_share_out_every_call() -> None:
    for calls in (1, 7, 10, 23, 2000):
        shares = [measure_module._share(calls, piece) for piece in range(measure_module.SLICES)]
        assert sum(shares) == calls and max(shares) - min(shares) <= 1


def test_short_calls_are_repeated_to_fill_a_round() -> None:
    count = 0

    def tiny(feed: Any) -> Any:
        nonlocal count
        count += 1
        return feed

    arrays = {"input": np.zeros((4, 2), dtype=np.float32)}
    result = measure({"tiny": tiny}, arrays, [1, 4], warmup=1, iterations=3, rounds=3, threads=1)
    timing = result.timings["tiny"]
    assert len(timing.latency_ms) > 3 * 1  # far more than ceil(3 / 3) per round
    assert result.conditions.min_round_seconds == measure_module.MIN_ROUND_SECONDS
    assert count >= len(timing.latency_ms) * 2


def test_one_thread_is_timed_by_cpu_time_more_threads_by_the_wall_clock() -> None:
    arrays = {"input": np.zeros((2, 2), dtype=np.float32)}
    runners = {"a": lambda feed: feed}
    one = measure(runners, arrays, [1, 2], warmup=1, iterations=3, rounds=3, threads=1)
    four = measure(runners, arrays, [1, 2], warmup=1, iterations=3, rounds=3, threads=4)
    assert (one.conditions.clock, four.conditions.clock) == ("cpu", "wall")
    assert "cpu clock" in one.conditions.line() and one.conditions.as_dict()["clock"] == "cpu"

"""Accuracy gate, candidate choice, shape profiles and the candidates table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optiserve.model_io import TensorSpec
from optiserve_optimizer.artifact import ModelArtifact
from optiserve_optimizer.evaluate import compare, gate
from optiserve_optimizer.measure import RunnerTiming
from optiserve_optimizer.outcome import Outcome, decide
from optiserve_optimizer.passes.shapes import derive_profiles
from optiserve_optimizer.plan import CandidatePlan, Step
from optiserve_optimizer.progress import candidates_table


def outcome(name: str, drop: float, throughput: float, steps: int = 2) -> Outcome:
    verdict = gate("maxAbsError", 0.05, {"maxAbsError": drop, "meanCosine": 1.0})
    rounds = tuple(throughput * f for f in (0.99, 1.0, 1.01, 1.0, 0.98))
    return Outcome(
        CandidatePlan(name, "fp32", tuple(Step(f"s{i}") for i in range(steps))),
        ModelArtifact(onnx=Path("/nonexistent")),
        {},
        verdict,
        RunnerTiming(1, 32, (1.0,), rounds),
    )


def test_top1_drop_uses_labels_when_present() -> None:
    ref = np.eye(4, dtype=np.float32)
    got = ref.copy()
    got[0] = [0, 1, 0, 0]
    labels = np.array([0, 1, 2, 0])
    details = compare([ref], [got], labels)
    assert details["top1Original"] == 0.75 and details["top1"] == 0.5
    assert gate("top1", 0.1, details).drop == pytest.approx(0.25)
    unlabeled = compare([ref], [got], None)
    assert gate("top1", 0.1, unlabeled).drop == pytest.approx(0.25)  # 1 - agreement
    assert not gate("top1", 0.1, unlabeled).passed


def test_cosine_and_max_abs_error() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    got = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    details = compare([ref], [got], None)
    assert gate("cosine", 0.5, details).drop == pytest.approx(1 - (1 + np.sqrt(0.5)) / 2)
    assert gate("maxAbsError", 0.5, details).drop == pytest.approx(1.0)
    assert "maxDrop 0.5" in gate("maxAbsError", 0.5, details).reason()


def test_the_fastest_passing_candidate_wins() -> None:
    outcomes = [outcome("fp32", 0.0, 100), outcome("int8", 0.01, 300), outcome("pruned", 0.2, 900)]
    chosen, reason, reasons = decide(outcomes)
    assert chosen is not None and chosen.plan.name == "int8" and reason is None
    assert "int8 is faster beyond the noise" in reasons["fp32"]


def test_a_candidate_within_the_noise_loses_to_the_more_accurate_one() -> None:
    chosen, _, reasons = decide([outcome("fp32", 0.0, 100), outcome("int8", 0.01, 102)])
    assert chosen is not None and chosen.plan.name == "fp32"
    assert "fp32 is more accurate" in reasons["int8"]


def test_no_passing_candidate_keeps_the_unoptimized_model_and_says_why() -> None:
    chosen, reason, _ = decide([outcome("int8", 0.3, 300), outcome("pruned", 0.2, 900)])
    assert chosen is None
    assert reason is not None and "int8: maxAbsError drop 0.3 > maxDrop 0.05" in reason


def test_a_failed_candidate_is_never_chosen_and_keeps_its_reason() -> None:
    failed = Outcome(
        CandidatePlan("pruned-structured", "fp32", ()),
        failure="failed in prune(method=structured): [prune] found no channel chain",
        failed_step="prune(method=structured)",
    )
    chosen, _, _ = decide([failed, outcome("fp32", 0.0, 100)])
    assert chosen is not None and chosen.plan.name == "fp32"
    assert not failed.passed and "no channel chain" in failed.verdict()


def test_profiles_come_from_sequence_lengths() -> None:
    mask = np.zeros((10, 64), dtype=np.int64)
    for i, length in enumerate([5, 7, 9, 10, 12, 12, 14, 20, 30, 40]):
        mask[i, :length] = 1
    inputs = [TensorSpec("input_ids", "int64", (-1,)), TensorSpec("attention_mask", "int64", (-1,))]
    profiles, facts = derive_profiles(inputs, {"input_ids": mask, "attention_mask": mask}, [1, 32])
    assert profiles["input_ids"] == {"min": [1, 5], "opt": [32, 16], "max": [32, 40]}
    assert facts["paddingSaved"] == pytest.approx(1 - 15.9 / 64, abs=1e-3)
    assert facts["lengthMax"] == 40


def test_candidates_table_marks_the_choice() -> None:
    table = candidates_table(
        [
            {"name": "a", "passed": True, "chosen": True},
            {"name": "b", "passed": False, "reason": "too lossy"},
        ]
    )
    assert "| a |" in table and "CHOSEN" in table and "fail (too lossy)" in table


def test_a_pass_that_cannot_run_here_fails_only_the_candidates_needing_it() -> None:
    from optiserve_optimizer.errors import MissingDependencyError
    from optiserve_optimizer.outcome import unavailable

    why = MissingDependencyError("tensorrt", "no usable CUDA GPU: driver too old")
    load = Step("load_export")
    trt = CandidatePlan("tensorrt-fp16", "fp16", (load, Step("quantize"), Step("tensorrt")))
    ort = CandidatePlan("int8-dynamic", "int8", (load, Step("quantize", {"method": "dynamic"})))
    failed = unavailable(trt, {"tensorrt": why})
    assert failed is not None and not failed.passed and failed.artifact is None
    assert failed.failed_step == "tensorrt"
    assert failed.verdict() == "failed in tensorrt: [tensorrt] no usable CUDA GPU: driver too old"
    assert unavailable(ort, {"tensorrt": why}) is None
    assert unavailable(trt, {}) is None

"""A candidate's fate (built, failed, gated, timed), the choice, and how it reads in the status.

Pure: no model is built or run here, so the rules are unit-tested on plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optiserve.api import Candidate, MeasurementConditions, Metrics
from optiserve_optimizer.artifact import ModelArtifact
from optiserve_optimizer.errors import OptimizerError
from optiserve_optimizer.evaluate import GateResult
from optiserve_optimizer.measure import MARGIN, Contender, Measurement, RunnerTiming, Spread, choose
from optiserve_optimizer.plan import CandidatePlan
from optiserve_optimizer.runners import ORT_BASELINE, Runner


@dataclass
class Outcome:
    """One candidate's fate: built (or failed, and where), gated, timed."""

    plan: CandidatePlan
    artifact: ModelArtifact | None = None
    passes: dict[str, Any] = field(default_factory=dict)
    gate: GateResult | None = None
    timing: RunnerTiming | None = None
    failure: str | None = None  # why the candidate could not be built or run
    failed_step: str | None = None
    runner: Runner | None = None

    @property
    def passed(self) -> bool:
        return self.failure is None and self.gate is not None and self.gate.passed

    @property
    def size(self) -> int | None:
        return self.artifact.served_file.stat().st_size if self.artifact else None

    def verdict(self) -> str:
        if self.failure is not None:
            return self.failure
        return self.gate.reason() if self.gate is not None else "not evaluated"


class CandidateFailed(Exception):
    """A step of this candidate (or of a shared prefix) could not be applied."""

    def __init__(self, step: str, cause: OptimizerError) -> None:
        super().__init__(f"{step}: {cause}")
        self.step, self.cause = step, cause


def unavailable(candidate: CandidatePlan, missing: dict[str, OptimizerError]) -> Outcome | None:
    """A failed outcome, before any step runs, for a candidate needing a pass that cannot run
    here (``missing``: pass name -> why, e.g. TensorRT on a GPU it cannot use); None otherwise."""
    for step in candidate.steps:
        if step.name in missing:
            return Outcome(
                candidate,
                failure=f"failed in {step.describe()}: {missing[step.name]}",
                failed_step=step.describe(),
            )
    return None


def decide(
    outcomes: list[Outcome], margin: float = MARGIN
) -> tuple[Outcome | None, str | None, dict[str, str]]:
    """(winner, why nothing won, each passing candidate's verdict) by ``measure.choose``:
    faster only beyond the noise, otherwise more accurate, then simpler. No winner means the
    unoptimized ONNX model is packaged."""
    passing = [o for o in outcomes if o.passed and o.timing is not None]
    decision = choose(
        [
            Contender(
                o.plan.name,
                o.timing.round_throughput,
                o.gate.drop,
                len(o.plan.steps),
            )
            for o in passing
            if o.timing is not None and o.gate is not None
        ],
        margin,
    )
    if decision is None:
        return (
            None,
            "no candidate was built and passed the accuracy gate: "
            + "; ".join(f"{o.plan.name}: {o.verdict()}" for o in outcomes),
            {},
        )
    chosen = next(o for o in passing if o.plan.name == decision.chosen.name)
    return chosen, None, decision.reasons


def candidate_row(
    o: Outcome,
    chosen: bool,
    reasons: dict[str, str],
    measurement: Measurement,
    baseline: str,
) -> Candidate:
    """A rung of the status ladder: a failed candidate shows why, a timed one its speedup."""
    timing = o.timing
    speedup = None
    if timing is not None:
        ratio = measurement.speedup(o.plan.name, baseline)
        speedup = f"{ratio.ratio_text()} ({ratio.range_text()})"
    drop = o.gate.drop if o.gate is not None else None
    return Candidate(
        name=o.plan.name,
        precision=o.artifact.precision if o.artifact else o.plan.precision,
        latency_ms=round(timing.p50_ms, 4) if timing else None,
        throughput=round(timing.throughput, 2) if timing else None,
        accuracy_drop=round(drop, 6) if drop is not None and drop != float("inf") else None,
        size_bytes=o.size,
        speedup=speedup,
        passed=o.passed,
        failed=o.failure is not None,
        chosen=chosen,
        reason=(reasons.get(o.plan.name, "") if o.passed else o.verdict()),
    )


def named_metrics(
    measurement: Measurement,
    baseline_name: str,
    optimized: str,
    drop: float,
    size_ratio: float,
) -> Metrics:
    """The named ratio of ``optimized`` (a candidate, or the ORT baseline when nothing
    won) against the baseline, and against onnxruntime FP32 beside it."""
    base, best = measurement.timings[baseline_name], measurement.timings[optimized]
    ratio = measurement.speedup(optimized, baseline_name)
    versus_ort: Spread | None = (
        measurement.speedup(optimized, ORT_BASELINE) if baseline_name != ORT_BASELINE else None
    )
    conditions = measurement.conditions
    return Metrics(
        baseline=baseline_name,
        baseline_latency_ms=round(base.p50_ms, 4),
        optimized_latency_ms=round(best.p50_ms, 4),
        baseline_throughput=round(base.throughput, 2),
        optimized_throughput=round(best.throughput, 2),
        speedup=ratio.ratio_text(),
        speedup_range=ratio.range_text(),
        speedup_vs_onnxruntime=versus_ort.ratio_text() if versus_ort else None,
        accuracy_drop=round(drop, 6),
        size_ratio=round(size_ratio, 3),
        measured=MeasurementConditions(
            cpu=conditions.cpu[:256],
            gpu=conditions.gpu[:256],
            instruction_sets=list(conditions.instruction_sets),
            logical_cpus=conditions.logical_cpus,
            threads=conditions.threads,
            load_average=conditions.load_before[0] if conditions.load_before[0] >= 0 else None,
            rounds=conditions.rounds,
            clock="cpu" if conditions.clock == "cpu" else "wall",
            batch=conditions.throughput_batch,
        ),
    )

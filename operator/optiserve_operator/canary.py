"""The canary rollout as a pure function: where it stands and what it reads in, what to do out.

A canary serves the candidate artifact from a second Deployment beside the stable one, behind
the one Service; the weight of a step is carried by replica counts (no mesh needed), or, when
the model is exposed through an HTTPRoute, by the route's backend weights exactly
(``exact_weights``; ``canary_route`` decides when). Every decision is made again from
``status.rollout`` and the readings of this pass, so a restarted operator resumes at the same
step. The steps:

- ``Canary``: the canary holds at the step's weight until ``pauseSeconds`` have passed with at
  least ``minRequests`` served and both checks passing; then the next step, or ``Promoting``.
  A failing check, or canary pods that are not Ready within the rollout deadline: ``Aborted``.
- ``Promoting``: the stable Deployment takes the canary's artifact, replaced in place (no
  surge pod); the canary keeps serving meanwhile.
- ``Promoted``: the stable serves the candidate; the canary Deployment is deleted, and once it
  is gone the stable returns to its full replica count and ``status.rollout`` is cleared.
- ``Aborted``: the canary is deleted, the stable keeps serving; the candidate is remembered as
  bad for the spec generation it failed under, so it is not retried until the spec changes.

The GPU budget: stable and canary pods together never hold more GPUs than the stable's own
(``replicas`` x GPUs per pod) plus ``maxSurgeGPUs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from optiserve.api.rollout import RolloutAnalysis, RolloutSpec, RolloutStatus

Action = Literal["start", "hold", "next", "promote", "finish", "done", "abort", "aborted"]


@dataclass(frozen=True)
class Readings:
    """Triton's counters of the canary and the stable over the step's window (Prometheus)."""

    canary_success: float
    canary_failure: float
    canary_p99_ms: float | None  # None: no request finished in the window
    stable_p99_ms: float | None


@dataclass(frozen=True)
class Budget:
    replicas: int  # the stable's own replica count (spec.serving.replicas)
    gpus_per_pod: int  # 0: a CPU model
    max_surge_gpus: int


@dataclass(frozen=True)
class Split:
    stable: int
    canary: int

    @property
    def weight(self) -> int:
        """Percent of the serving pods on the canary (what the Service spreads traffic over)."""
        return round(100 * self.canary / (self.stable + self.canary))


def pod_budget(budget: Budget) -> int:
    """Pods the stable and canary may run together: the stable's, plus what the surge buys
    (a whole pod's GPUs each; a CPU model may add one pod, as the rolling update does)."""
    if budget.gpus_per_pod == 0:
        return budget.replicas + 1
    return budget.replicas + budget.max_surge_gpus // budget.gpus_per_pod


def split(budget: Budget, weight: int) -> Split | None:
    """The replica counts carrying ``weight`` percent; None when the budget cannot hold a
    canary pod beside a stable one."""
    total = pod_budget(budget)
    if total < 2:
        return None
    canary = min(max(1, math.ceil(total * weight / 100)), total - 1)
    return Split(stable=total - canary, canary=canary)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    check: str = ""  # the failing check: errorRate or latencyP99Ratio
    message: str = ""


def judge(analysis: RolloutAnalysis, readings: Readings) -> Verdict | None:
    """Both checks over the readings; None while fewer than ``minRequests`` were served."""
    total = readings.canary_success + readings.canary_failure
    if total < max(analysis.min_requests, 1):
        return None
    error_rate = readings.canary_failure / total
    if error_rate > analysis.max_error_rate:
        return Verdict(
            False,
            "errorRate",
            f"error rate {error_rate:.3f} ({readings.canary_failure:.0f} of {total:.0f} "
            f"requests failed) is above maxErrorRate {analysis.max_error_rate}",
        )
    canary, stable = readings.canary_p99_ms, readings.stable_p99_ms
    if canary is not None and stable is not None and stable > 0:
        ratio = canary / stable
        if ratio > analysis.max_latency_p99_ratio:
            return Verdict(
                False,
                "latencyP99Ratio",
                f"p99 latency {canary:.1f} ms is {ratio:.2f}x the stable's {stable:.1f} ms, "
                f"above maxLatencyP99Ratio {analysis.max_latency_p99_ratio}",
            )
    p99 = f", p99 {canary:.1f} ms vs {stable:.1f} ms" if canary and stable else ""
    return Verdict(True, message=f"{total:.0f} requests, error rate {error_rate:.3f}{p99}")


@dataclass(frozen=True)
class Decision:
    action: Action
    state: RolloutStatus | None  # the new status.rollout
    stable_replicas: int = 0
    canary_replicas: int = 0  # 0: no canary Deployment wanted
    stable_on_candidate: bool = False  # the stable Deployment renders the candidate artifact
    message: str = ""
    failed_check: str = ""


def _seconds_between(start: str, now: str) -> float:
    try:
        return (datetime.fromisoformat(now) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return 0.0


def _with(state: RolloutStatus, **changes: object) -> RolloutStatus:
    return state.model_copy(update=changes)


def _short(digest: str) -> str:
    return digest[:12]


def plan_canary(
    rollout: RolloutSpec,
    state: RolloutStatus | None,
    *,
    stable_digest: str,
    candidate_digest: str,
    generation: int,
    now: str,
    budget: Budget,
    canary_ready: bool,
    canary_deadline_exceeded: bool,
    stable_on_candidate_rolled_out: bool,
    canary_gone: bool,
    readings: Readings | None,
    readings_error: str = "",
    analysis_configured: bool = True,
    exact_weights: bool = False,
    candidate_current: bool = True,
) -> Decision:
    """What to do this pass. Without a Prometheus to read (``analysis_configured`` False) a
    canary cannot be analysed, so none is started and the stable keeps serving: a canary
    promoted on readiness alone would be the rolling update the spec asked not to have.
    ``exact_weights``: the traffic weight is the step's own (an HTTPRoute carries it), not
    the share of pods the replica counts give. ``candidate_current``: the candidate is the
    artifact of the spec as it is now (False while the Job of a changed spec still runs and
    the last artifact built stands in as the candidate)."""
    full = budget.replicas

    def weight(at: Split, step: int) -> int:
        return rollout.steps[step].weight if exact_weights else at.weight

    if state is not None and state.canary_digest == candidate_digest:
        # While canary pods drain, the stable keeps the share it had, so the two together
        # never hold more GPUs than the budget; once they are gone it returns to full.
        share = full if canary_gone else _share(rollout, budget, state.step)
        if state.phase == "Aborted":
            # Another chance only under a changed spec whose own artifact it still is; a spec
            # whose new artifact is still being built does not bring the bad one back.
            if state.generation == generation or not candidate_current:
                return Decision("aborted", state, share, 0, message=state.message)
            state = None  # the spec changed since: the candidate gets another chance
        elif state.phase == "Promoted":
            if canary_gone:
                return Decision("done", None, full, 0, stable_on_candidate=True)
            return Decision("finish", state, share, 0, True, state.message)
    if state is None or state.canary_digest != candidate_digest or state.phase == "Promoted":
        if not analysis_configured:
            message = (
                "no Prometheus is configured (operator flag --prometheus-url, chart value "
                "prometheus.url): the canary cannot be analysed, so it is not started; "
                f"still serving {_short(stable_digest)}"
            )
            return Decision("hold", None, full, 0, message=message, failed_check="unavailable")
        first = split(budget, rollout.steps[0].weight)
        if first is None:
            message = (
                f"a canary pod does not fit beside a stable one: {budget.replicas} replica(s) "
                f"of {budget.gpus_per_pod} GPU(s) and maxSurgeGPUs "
                f"{rollout.max_surge_gpus}; raise serving.replicas or maxSurgeGPUs"
            )
            return Decision("hold", None, full, 0, message=message, failed_check="budget")
        started = RolloutStatus(
            phase="Canary",
            stable_digest=stable_digest,
            canary_digest=candidate_digest,
            stable_revision=_short(stable_digest),
            canary_revision=_short(candidate_digest),
            step=0,
            weight=weight(first, 0),
            step_started=now,
            generation=generation,
            message=f"step 1 of {len(rollout.steps)}: canary at {weight(first, 0)}%",
        )
        return Decision("start", started, first.stable, first.canary, message=started.message)
    step = min(state.step, len(rollout.steps) - 1)
    current = split(budget, rollout.steps[step].weight) or Split(_share(rollout, budget, step), 1)
    if state.phase == "Promoting":
        if stable_on_candidate_rolled_out:
            done = _with(state, phase="Promoted", weight=0, message="promoted")
            return Decision("finish", done, current.stable, 0, True, done.message)
        return Decision("promote", state, current.stable, current.canary, True, state.message)
    # phase Canary
    if canary_deadline_exceeded:
        return _abort(
            state,
            current.stable,
            "ready",
            "the canary pods were not Ready within the rollout deadline",
        )
    if not canary_ready:
        # The step's time counts from the canary serving at its weight, not from asking.
        waiting = _with(state, step_started=now, message="waiting for the canary pods")
        return Decision("hold", waiting, current.stable, current.canary, message=waiting.message)
    if readings is None:
        reason = readings_error or (
            "no Prometheus is configured (--prometheus-url)"
            if not analysis_configured
            else "no readings yet"
        )
        held = _with(state, message=f"analysis cannot be read: {reason}")
        return Decision("hold", held, current.stable, current.canary, message=held.message)
    verdict = judge(rollout.analysis, readings)
    if verdict is not None and not verdict.passed:
        return _abort(state, current.stable, verdict.check, verdict.message)
    elapsed = _seconds_between(state.step_started, now)
    pause = rollout.steps[step].pause_seconds
    if verdict is None or elapsed < pause:
        served = readings.canary_success + readings.canary_failure
        said = (
            f"{served:.0f} of minRequests {rollout.analysis.min_requests} requests"
            if verdict is None
            else verdict.message
        )
        held = _with(
            state,
            message=f"step {step + 1} of {len(rollout.steps)} at {state.weight}%: {said}, "
            f"{min(elapsed, pause):.0f}s of {pause}s",
        )
        return Decision("hold", held, current.stable, current.canary, message=held.message)
    if step + 1 < len(rollout.steps):
        nxt = split(budget, rollout.steps[step + 1].weight) or current
        moved = _with(
            state,
            step=step + 1,
            weight=weight(nxt, step + 1),
            step_started=now,
            message=f"step {step + 2} of {len(rollout.steps)}: canary at {weight(nxt, step + 1)}% "
            f"(step {step + 1} passed: {verdict.message})",
        )
        return Decision("next", moved, nxt.stable, nxt.canary, message=moved.message)
    promoting = _with(
        state,
        phase="Promoting",
        message=f"promoting {_short(state.canary_digest)} (last step passed: {verdict.message})",
    )
    return Decision("promote", promoting, current.stable, current.canary, True, promoting.message)


def _share(rollout: RolloutSpec, budget: Budget, step: int) -> int:
    """The stable's replicas at ``step`` (all of them when no canary pod fits)."""
    found = split(budget, rollout.steps[min(step, len(rollout.steps) - 1)].weight)
    return found.stable if found is not None else budget.replicas


def _abort(state: RolloutStatus, stable: int, check: str, message: str) -> Decision:
    """The canary goes (its Deployment is deleted); the stable keeps its share until the
    canary's pods are gone (the next passes), then returns to its full count."""
    said = f"canary {_short(state.canary_digest)} aborted at step {state.step + 1}: {check}: "
    aborted = _with(state, phase="Aborted", weight=0, message=said + message)
    return Decision("abort", aborted, stable, 0, message=aborted.message, failed_check=check)

"""The canary planner (optiserve_operator.canary): pure, so every step is a plain call."""

from __future__ import annotations

from typing import Any

from optiserve.api.rollout import RolloutSpec, RolloutStatus
from optiserve_operator.canary import (
    Budget,
    Decision,
    Readings,
    Split,
    judge,
    plan_canary,
    split,
)

STABLE, CANDIDATE = "a" * 64, "b" * 64
T0 = "2026-01-01T00:00:00+00:00"
SPEC = RolloutSpec.model_validate(
    {
        "strategy": "canary",
        "steps": [{"weight": 25, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}],
        "analysis": {"maxErrorRate": 0.05, "maxLatencyP99Ratio": 1.5, "minRequests": 100},
    }
)
CPU = Budget(replicas=3, gpus_per_pod=0, max_surge_gpus=0)
GOOD = Readings(canary_success=500, canary_failure=1, canary_p99_ms=10.0, stable_p99_ms=9.0)


def at(seconds: int) -> str:
    return f"2026-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}+00:00"


def step(state: RolloutStatus | None, now: str = T0, **kw: Any) -> Decision:
    args: dict[str, Any] = {
        "stable_digest": STABLE,
        "candidate_digest": CANDIDATE,
        "generation": 1,
        "now": now,
        "budget": CPU,
        "canary_ready": True,
        "canary_deadline_exceeded": False,
        "stable_on_candidate_rolled_out": False,
        "canary_gone": False,
        "readings": GOOD,
    }
    args.update(kw)
    return plan_canary(SPEC, state, **args)


def test_split_carries_the_weight_in_replicas_within_the_gpu_budget() -> None:
    # CPU: the stable's 3 pods plus one surge pod.
    assert split(CPU, 25) == Split(stable=3, canary=1)
    assert split(CPU, 50) == Split(stable=2, canary=2)
    assert split(CPU, 99) == Split(stable=1, canary=3)  # the stable always keeps one pod
    # GPU: 2 replicas of 2 GPUs, 2 surge GPUs buy one more pod; never more than 6 GPUs.
    gpu = Budget(replicas=2, gpus_per_pod=2, max_surge_gpus=2)
    for weight in (1, 10, 34, 50, 90):
        found = split(gpu, weight)
        assert found is not None
        assert (found.stable + found.canary) * 2 <= 2 * 2 + 2
        assert found.canary >= 1 and found.stable >= 1
    # One GPU pod and no surge: no canary pod fits beside the stable.
    assert split(Budget(replicas=1, gpus_per_pod=1, max_surge_gpus=0), 10) is None
    assert split(Budget(replicas=1, gpus_per_pod=1, max_surge_gpus=1), 10) == Split(1, 1)


def test_judge_names_the_failing_check_with_the_numbers() -> None:
    a = SPEC.analysis
    assert judge(a, Readings(50, 0, 1.0, 1.0)) is None  # fewer than minRequests
    errors = judge(a, Readings(90, 10, 1.0, 1.0))
    assert errors is not None and not errors.passed and errors.check == "errorRate"
    assert "0.100" in errors.message and "10 of 100" in errors.message
    slow = judge(a, Readings(100, 0, 30.0, 10.0))
    assert slow is not None and slow.check == "latencyP99Ratio" and "3.00x" in slow.message
    ok = judge(a, GOOD)
    assert ok is not None and ok.passed


def test_a_good_canary_goes_through_every_step_to_promotion() -> None:
    d = step(None)
    assert d.action == "start" and d.state is not None
    assert (d.stable_replicas, d.canary_replicas, d.state.weight) == (3, 1, 25)
    assert d.state.stable_revision == STABLE[:12] and d.state.canary_revision == CANDIDATE[:12]
    d = step(d.state, at(30))
    assert d.action == "hold" and d.state is not None and d.state.step == 0  # pause not over
    d = step(d.state, at(61))
    assert d.action == "next" and d.state is not None and d.state.step == 1
    assert (d.stable_replicas, d.canary_replicas, d.state.weight) == (2, 2, 50)
    d = step(d.state, at(125))
    assert d.action == "promote" and d.state is not None and d.state.phase == "Promoting"
    assert d.stable_on_candidate and d.canary_replicas == 2  # the canary serves meanwhile
    d = step(d.state, at(130), stable_on_candidate_rolled_out=True)
    assert d.action == "finish" and d.state is not None and d.state.phase == "Promoted"
    assert d.canary_replicas == 0 and d.stable_replicas == 2  # its share until the canary drains
    d = step(d.state, at(135), canary_gone=True)
    assert d.action == "done" and d.state is None and d.stable_replicas == 3


def test_a_restarted_operator_resumes_at_the_same_step() -> None:
    d = step(step(None).state, at(61))
    saved = RolloutStatus.model_validate(d.state.to_wire() if d.state else {})
    again = step(saved, at(62))
    assert again.action == "hold" and again.state is not None and again.state.step == 1
    assert again.state.step_started == at(61)  # not reset by the restart


def test_failing_analysis_aborts_and_the_candidate_is_remembered_until_the_spec_changes() -> None:
    d = step(None)
    d = step(d.state, at(30), readings=Readings(90, 10, 5.0, 5.0))
    assert d.action == "abort" and d.failed_check == "errorRate" and d.canary_replicas == 0
    assert d.state is not None and d.state.phase == "Aborted" and "10 of 100" in d.state.message
    assert d.stable_replicas == 3
    d = step(d.state, at(400), canary_gone=True)
    assert d.action == "aborted" and d.canary_replicas == 0 and d.stable_replicas == 3
    d = step(d.state, at(401), generation=2)  # the spec changed: tried again from step 1
    assert d.action == "start" and d.state is not None and d.state.step == 0


def test_an_aborted_candidate_is_not_tried_again_while_a_changed_spec_builds_its_own() -> None:
    d = step(step(None).state, at(30), readings=Readings(90, 10, 5.0, 5.0))
    assert d.action == "abort"
    # The spec changed, and its new artifact is still being built: the bad one, the last
    # artifact built, stands in as the candidate but gets no canary.
    d = step(d.state, at(60), generation=2, canary_gone=True, candidate_current=False)
    assert d.action == "aborted" and d.canary_replicas == 0 and d.stable_replicas == 3
    assert d.state is not None and d.state.canary_digest == CANDIDATE
    # The new artifact arrives: a canary for it, from step 1.
    d = step(d.state, at(90), generation=2, canary_gone=True, candidate_digest="c" * 64)
    assert d.action == "start" and d.state is not None and d.state.canary_digest == "c" * 64


def test_a_slow_canary_is_aborted_on_the_latency_ratio() -> None:
    d = step(step(None).state, at(10), readings=Readings(200, 0, 40.0, 10.0))
    assert d.action == "abort" and d.failed_check == "latencyP99Ratio"
    assert d.state is not None and "4.00x" in d.state.message


def test_gpu_abort_keeps_the_stable_at_its_share_until_the_canary_is_gone() -> None:
    gpu = Budget(replicas=2, gpus_per_pod=1, max_surge_gpus=0)
    d = step(None, budget=gpu)
    assert (d.stable_replicas, d.canary_replicas) == (1, 1)
    d = step(d.state, at(5), budget=gpu, readings=Readings(0, 100, 1.0, 1.0))
    assert d.action == "abort" and d.stable_replicas == 1
    d = step(d.state, at(6), budget=gpu)
    assert d.action == "aborted" and d.stable_replicas == 1  # canary pods still draining
    d = step(d.state, at(7), budget=gpu, canary_gone=True)
    assert d.stable_replicas == 2


def test_holds_without_evidence_and_waits_for_ready_pods() -> None:
    started = step(None).state
    few = step(started, at(90), readings=Readings(10, 0, 1.0, 1.0))
    assert few.action == "hold" and few.state is not None and "10 of minRequests 100" in few.message
    waiting = step(started, at(90), canary_ready=False)
    assert waiting.action == "hold" and waiting.state is not None
    assert waiting.state.step_started == at(90)  # the step's time starts once pods serve
    late = step(started, at(90), canary_ready=False, canary_deadline_exceeded=True)
    assert late.action == "abort" and late.failed_check == "ready"
    broken = step(started, at(90), readings=None, readings_error="HTTP 503")
    assert broken.action == "hold" and "HTTP 503" in broken.message


def test_no_prometheus_means_no_canary_and_the_stable_keeps_serving() -> None:
    d = step(None, readings=None, analysis_configured=False)
    assert d.action == "hold" and d.failed_check == "unavailable" and d.state is None
    assert d.canary_replicas == 0 and d.stable_replicas == 3
    assert "--prometheus-url" in d.message


def test_a_budget_without_room_for_a_canary_pod_says_so() -> None:
    d = step(None, budget=Budget(replicas=1, gpus_per_pod=1, max_surge_gpus=0))
    assert d.action == "hold" and d.failed_check == "budget" and d.canary_replicas == 0
    assert "maxSurgeGPUs" in d.message

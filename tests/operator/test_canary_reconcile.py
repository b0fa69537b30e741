"""A canary rollout through ``reconcile.plan``: manifests, status.rollout, conditions, events."""

from __future__ import annotations

import copy
from typing import Any

from optiserve.api import OptimizedModel, OptimizedModelSpec
from optiserve.api.status import OptimizedModelStatus
from optiserve.render.kubernetes import job_name
from optiserve_operator.canary import Readings
from optiserve_operator.canary_rollout import CanaryObserved
from optiserve_operator.observe import DeploymentState
from optiserve_operator.reconcile import Config, Observed, Plan, plan, recipe_digest

from .helpers import BASE, OWNER, deployment, job, model, summary_message

CONFIG = Config(optimizer_image="optimizer:test", poll_seconds=5, resync_seconds=60)
GOOD = Readings(canary_success=400, canary_failure=0, canary_p99_ms=5.0, stable_p99_ms=5.0)
ROLLOUT = {
    "strategy": "canary",
    "steps": [{"weight": 25, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}],
    "analysis": {"minRequests": 100, "maxErrorRate": 0.02},
}


def canary_spec(precision: str) -> OptimizedModelSpec:
    obj: dict[str, Any] = copy.deepcopy(BASE)
    obj["spec"]["optimization"]["quantization"] = {"precision": precision}
    obj["spec"]["serving"]["replicas"] = 3
    obj["spec"]["rollout"] = ROLLOUT
    return OptimizedModel.model_validate(obj).spec


def stable_ready(digest: str, replicas: int = 3) -> DeploymentState:
    return deployment(digest, replicas=replicas)


def served_by_stable(status: OptimizedModelStatus) -> tuple[OptimizedModelStatus, str, str]:
    """A model Ready on the int8 artifact whose spec now asks for fp32: the fp32 Job is done."""
    old_spec, new_spec = canary_spec("int8"), canary_spec("fp32")
    old, new = recipe_digest(OWNER.name, old_spec), recipe_digest(OWNER.name, new_spec)
    done_old = job(job_name("digits", old), old, "succeeded", summary_message(old))
    first = plan(Observed(model=model(old_spec)), "2026-01-01T00:00:00Z", CONFIG)
    read = plan(
        Observed(model=model(old_spec, first.status), jobs=(done_old,)),
        "2026-01-01T00:01:00Z",
        CONFIG,
    )
    ready = plan(
        Observed(model=model(old_spec, read.status), deployment=stable_ready(old)),
        "2026-01-01T00:02:00Z",
        CONFIG,
    )
    assert ready.status.phase == "Ready"
    assert ready.apply[0]["spec"]["template"]["spec"]["containers"][0]["args"][-1] == (
        "--metrics-config=summary_latencies=true"
    )
    done_new = job(job_name("digits", new), new, "succeeded", summary_message(new, "fp32"))
    started = plan(
        Observed(
            model=model(new_spec, ready.status, generation=2),
            jobs=(done_new,),
            deployment=stable_ready(old),
        ),
        "2026-01-01T00:03:00Z",
        CONFIG,
    )
    return started.status, old, new


def step(
    status: OptimizedModelStatus,
    now: str,
    *,
    stable: DeploymentState,
    canary: CanaryObserved,
) -> Plan:
    return plan(
        Observed(
            model=model(canary_spec("fp32"), status, generation=2), deployment=stable, canary=canary
        ),
        now,
        CONFIG,
    )


def by_name(result: Plan) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in result.apply if m["kind"] == "Deployment"}


def artifact_of(manifest: dict[str, Any]) -> str:
    annotations = manifest["spec"]["template"]["metadata"]["annotations"]
    return str(annotations["optiserve.io/artifact-digest"])


def condition(result: Plan, type_: str) -> tuple[str, str, str]:
    found = next(c for c in result.status.conditions if c.type == type_)
    return found.status, found.reason, found.message


def test_a_good_canary_is_promoted_step_by_step() -> None:
    status, old, new = served_by_stable(OptimizedModelStatus())
    on = CanaryObserved(configured=True)
    start = step(status, "2026-01-01T00:04:00Z", stable=stable_ready(old), canary=on)
    deployments = by_name(start)
    assert set(deployments) == {"digits", "digits-canary"}
    canary = deployments["digits-canary"]
    assert artifact_of(canary) == new and artifact_of(deployments["digits"]) == old
    assert canary["spec"]["replicas"] == 1 and deployments["digits"]["spec"]["replicas"] == 3
    assert canary["spec"]["selector"]["matchLabels"]["optiserve.io/revision"] == "canary"
    assert canary["spec"]["template"]["metadata"]["labels"]["optiserve.io/model"] == "digits"
    rollout = start.status.rollout
    assert rollout is not None and rollout.phase == "Canary" and rollout.weight == 25
    assert (rollout.stable_revision, rollout.canary_revision) == (old[:12], new[:12])
    assert start.status.phase == "Deploying"
    assert condition(start, "Progressing")[:2] == ("True", "CanaryProgressing")
    assert "CanaryStarted" in [e.reason for e in start.events]
    assert not start.delete_canary

    running = CanaryObserved(deployment=deployment(new, replicas=1), configured=True, readings=GOOD)
    held = step(start.status, "2026-01-01T00:04:30Z", stable=stable_ready(old), canary=running)
    assert held.status.rollout is not None and held.status.rollout.step == 0
    nxt = step(held.status, "2026-01-01T00:05:01Z", stable=stable_ready(old), canary=running)
    assert nxt.status.rollout is not None and nxt.status.rollout.step == 1
    assert nxt.status.rollout.weight == 50
    assert by_name(nxt)["digits-canary"]["spec"]["replicas"] == 2
    assert by_name(nxt)["digits"]["spec"]["replicas"] == 2
    assert "CanaryStep" in [e.reason for e in nxt.events]

    running = CanaryObserved(deployment=deployment(new, replicas=2), configured=True, readings=GOOD)
    promote = step(nxt.status, "2026-01-01T00:06:05Z", stable=stable_ready(old, 2), canary=running)
    stable = by_name(promote)["digits"]
    assert artifact_of(stable) == new  # the stable takes the canary's artifact, in place
    assert stable["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert promote.status.rollout is not None and promote.status.rollout.phase == "Promoting"

    finish = step(
        promote.status, "2026-01-01T00:06:30Z", stable=stable_ready(new, 2), canary=running
    )
    assert finish.delete_canary and "digits-canary" not in by_name(finish)
    assert finish.status.last_good_artifact is not None
    assert finish.status.last_good_artifact.digest == new
    assert "CanaryPromoted" in [e.reason for e in finish.events]

    gone = CanaryObserved(configured=True)
    done = step(finish.status, "2026-01-01T00:07:00Z", stable=stable_ready(new, 3), canary=gone)
    assert done.status.rollout is None and done.status.phase == "Ready"
    assert by_name(done)["digits"]["spec"]["replicas"] == 3
    assert not done.delete_canary


def test_a_failing_canary_is_aborted_and_the_stable_keeps_serving() -> None:
    status, old, new = served_by_stable(OptimizedModelStatus())
    start = step(
        status,
        "2026-01-01T00:04:00Z",
        stable=stable_ready(old),
        canary=CanaryObserved(configured=True),
    )
    failing = CanaryObserved(
        deployment=deployment(new, replicas=1),
        configured=True,
        readings=Readings(150, 50, 5.0, 5.0),
    )
    aborted = step(start.status, "2026-01-01T00:04:30Z", stable=stable_ready(old), canary=failing)
    assert aborted.delete_canary and "digits-canary" not in by_name(aborted)
    assert artifact_of(by_name(aborted)["digits"]) == old
    assert aborted.status.phase == "Failed"
    degraded = condition(aborted, "Degraded")
    assert degraded[:2] == ("True", "CanaryAborted")
    assert "errorRate" in degraded[2] and "50 of 200" in degraded[2]
    warnings = [e for e in aborted.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["CanaryAborted"]  # once, with the numbers
    assert "50 of 200" in warnings[0].message
    # Remembered: the next passes do not start it again.
    later = step(
        aborted.status,
        "2026-01-01T01:00:00Z",
        stable=stable_ready(old),
        canary=CanaryObserved(configured=True),
    )
    assert "digits-canary" not in by_name(later) and not later.delete_canary
    assert later.status.rollout is not None and later.status.rollout.phase == "Aborted"
    assert later.events == ()


def test_without_prometheus_no_canary_starts_and_a_condition_says_why() -> None:
    status, old, _ = served_by_stable(OptimizedModelStatus())
    result = step(status, "2026-01-01T00:04:00Z", stable=stable_ready(old), canary=CanaryObserved())
    assert set(by_name(result)) == {"digits"} and artifact_of(by_name(result)["digits"]) == old
    degraded = condition(result, "Degraded")
    assert degraded[:2] == ("True", "CanaryAnalysisUnavailable")
    assert "--prometheus-url" in degraded[2]


def test_a_canary_with_an_autoscaler_is_refused() -> None:
    obj: dict[str, Any] = copy.deepcopy(BASE)
    obj["spec"]["rollout"] = ROLLOUT
    obj["spec"]["serving"]["autoscaling"] = {"maxReplicas": 3}
    try:
        OptimizedModel.model_validate(obj)
    except ValueError as err:
        assert "autoscaler" in str(err)
    else:
        raise AssertionError("a canary with an autoscaler was accepted")


def test_a_changed_spec_does_not_bring_the_aborted_artifact_back_while_its_job_runs() -> None:
    status, old, new = served_by_stable(OptimizedModelStatus())
    on = CanaryObserved(configured=True)
    start = step(status, "2026-01-01T00:04:00Z", stable=stable_ready(old), canary=on)
    failing = CanaryObserved(
        deployment=deployment(new, replicas=1), configured=True, readings=Readings(0, 200, 5, 5)
    )
    aborted = step(start.status, "2026-01-01T00:04:30Z", stable=stable_ready(old), canary=failing)
    assert aborted.status.rollout is not None and aborted.status.rollout.phase == "Aborted"
    # The spec changes again (generation 3): its Job is created, and meanwhile the aborted
    # artifact, the last one built, is not canaried again; the stable serves on.
    obj = canary_spec("fp32").to_wire()
    obj["source"]["uri"] = "pvc://models/digits-v2.onnx"
    changed = OptimizedModelSpec.model_validate(obj)
    assert recipe_digest(OWNER.name, changed) not in (old, new)
    building = plan(
        Observed(
            model=model(changed, aborted.status, generation=3),
            deployment=stable_ready(old),
            canary=on,
        ),
        "2026-01-01T00:05:00Z",
        CONFIG,
    )
    assert [m["kind"] for m in building.create if m["kind"] == "Job"] == ["Job"]
    assert set(by_name(building)) == {"digits"}
    assert artifact_of(by_name(building)["digits"]) == old
    assert building.status.rollout is not None and building.status.rollout.phase == "Aborted"
    assert building.status.rollout.canary_digest == new
    assert "CanaryStarted" not in [e.reason for e in building.events]

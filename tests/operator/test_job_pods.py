"""A Job pod that cannot start is reported with the scheduler's or kubelet's words, and a
running optimizer's progress shows in status."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

from optiserve.render.kubernetes import job_name
from optiserve_operator.observe import blocked, job_state
from optiserve_operator.progress import parse_progress
from optiserve_operator.reconcile import recipe_digest
from optiserve_optimizer.progress import Progress
from tests.operator.helpers import CONFIG, OWNER, condition, model, run, spec

UNSCHEDULABLE = (
    '0/3 nodes are available: persistentvolumeclaim "missing" not found. '
    "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
)


def pod(
    name: str = "digits-opt-1-abcde",
    *,
    phase: str = "Pending",
    created: str = "2026-01-01T00:00:00Z",
    scheduled: dict[str, Any] | None = None,
    waiting: dict[str, Any] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    status: dict[str, Any] = {"phase": phase}
    if scheduled is not None:
        status["conditions"] = [{"type": "PodScheduled", **scheduled}]
    if waiting is not None:
        status["containerStatuses"] = [{"name": "optimizer", "state": {"waiting": waiting}}]
    return {"metadata": meta, "status": status}


def unschedulable(**kw: Any) -> dict[str, Any]:
    return pod(
        scheduled={"status": "False", "reason": "Unschedulable", "message": UNSCHEDULABLE}, **kw
    )


def image_pull(reason: str) -> dict[str, Any]:
    message = 'failed to pull image "registry.invalid/optimizer:1": dial tcp: lookup failed'
    return pod(scheduled={"status": "True"}, waiting={"reason": reason, "message": message})


def test_the_schedulers_reason_is_taken_from_the_pod() -> None:
    reason, message = blocked([unschedulable()])
    assert reason == "Unschedulable"
    assert 'persistentvolumeclaim "missing" not found' in message
    assert message.startswith("pod digits-opt-1-abcde cannot start: ")


def test_image_pull_errors_read_as_one_reason_so_the_condition_does_not_flap() -> None:
    first = blocked([image_pull("ErrImagePull")])
    second = blocked([image_pull("ImagePullBackOff")])
    assert first[0] == second[0] == "ImagePullBackOff"
    assert "ErrImagePull: failed to pull image" in first[1]
    assert "ImagePullBackOff: failed to pull image" in second[1]


def test_pods_that_run_or_go_away_block_nothing_and_the_newest_pod_decides() -> None:
    assert blocked([]) == ("", "")
    assert blocked([pod(phase="Running", scheduled={"status": "True"})]) == ("", "")
    assert blocked([unschedulable(deleting=True)]) == ("", "")
    # Just created, not yet looked at by the scheduler: not blocked (yet).
    assert blocked([pod()]) == ("", "")
    older = unschedulable(created="2026-01-01T00:00:00Z")
    newer = pod(name="retry", phase="Running", created="2026-01-01T00:05:00Z")
    assert blocked([older, newer]) == ("", "")
    assert blocked([newer, older])[0] == ""


def _raw_job(name: str, digest: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {"optiserve.io/recipe-digest": digest}},
        "status": {"active": 1},
    }


def test_a_blocked_job_pod_is_pending_degraded_and_stalled_with_one_warning() -> None:
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    name = job_name(OWNER.name, digest)
    started = run(model(the_spec))

    stuck = job_state(_raw_job(name, digest), [unschedulable()])
    result = run(model(the_spec, started.status), jobs=(stuck,))
    assert result.create == ()  # the Job stays: the claim may yet appear
    assert result.status.phase == "Pending"
    assert condition(result, "Degraded") == ("True", "Unschedulable")
    assert condition(result, "Stalled") == ("True", "Unschedulable")
    assert condition(result, "Optimized") == ("False", "Unschedulable")
    assert condition(result, "Reconciling")[0] == "False"
    degraded = next(c for c in result.status.conditions if c.type == "Degraded")
    assert f"Job {name}: pod" in degraded.message and "not found" in degraded.message
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "Unschedulable")]
    assert result.requeue_after == CONFIG.poll_seconds  # still watched: it may recover

    # Scheduled now, but the image cannot be pulled: one new Warning, then no flapping.
    pulling = job_state(_raw_job(name, digest), [image_pull("ErrImagePull")])
    pull = run(model(the_spec, result.status), jobs=(pulling,))
    assert condition(pull, "Degraded") == ("True", "ImagePullBackOff")
    assert [e.reason for e in pull.events] == ["ImagePullBackOff"]
    backoff = job_state(_raw_job(name, digest), [image_pull("ImagePullBackOff")])
    assert run(model(the_spec, pull.status), jobs=(backoff,)).events == ()

    # The cause goes away: back to Optimizing, Degraded cleared.
    running = job_state(_raw_job(name, digest), [pod(phase="Running")])
    recovered = run(model(the_spec, pull.status), jobs=(running,))
    assert recovered.status.phase == "Optimizing"
    assert condition(recovered, "Degraded") == ("False", "AsExpected")
    assert condition(recovered, "Stalled")[0] == "False"


def _optimizer_log() -> str:
    """The optimizer's own progress output (its Progress class), as its pod log holds it."""
    out = io.StringIO()
    progress = Progress(stream=out)
    progress.line(
        "recipe 1a2b3c4d5e6f; plan:\n"
        "fp32: export\n"
        "int8-dynamic: export -> quantize(int8-dynamic)\n"
        "pruned-30: export -> prune(0.3) -> quantize(int8-dynamic)\n"
        "note: no calibration data; static INT8 skipped"
    )
    # As the pipeline runs: the export once, the baseline, then each candidate's own steps
    # (shared ones come from its cache) and its gate + benchmark.
    with progress.step("original", "export") as shown:
        shown["nodes"] = 3
    with progress.step("baseline", "benchmark") as shown:
        shown["p50_ms"] = 1.5
    with progress.step("fp32", "gate+bench") as shown:
        shown.update(drop=0.0, passed=True)
    with progress.step("int8-dynamic", "quantize"):
        pass
    with progress.step("int8-dynamic", "gate+bench") as shown:
        shown.update(drop=0.001, passed=True)
    try:
        with progress.step("pruned-30", "prune"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    return out.getvalue()


def test_progress_is_read_from_the_optimizers_own_output() -> None:
    found = parse_progress(_optimizer_log())
    assert found is not None
    assert found.planned == 3
    assert found.finished == ("fp32", "int8-dynamic")
    assert found.last_step == "pruned-30 prune (failed)"
    text = found.describe()
    assert "2 of 3 candidates finished (fp32, int8-dynamic)" in text
    assert "last step pruned-30 prune (failed)" in text


def test_progress_from_a_tail_without_the_plan_and_from_no_log() -> None:
    tail = "\n".join(_optimizer_log().splitlines()[-3:])
    found = parse_progress(tail)
    assert found is not None and found.planned is None
    assert found.finished == ("int8-dynamic",)
    assert "1 candidates finished" in found.describe()
    assert parse_progress("") is None
    assert parse_progress("Traceback (most recent call last):\n  boom") is None


def test_a_running_job_reports_its_progress_in_the_conditions() -> None:
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    name = job_name(OWNER.name, digest)
    found = parse_progress(_optimizer_log())
    assert found is not None
    running = job_state(_raw_job(name, digest), [pod(phase="Running")], found.describe())
    result = run(model(the_spec, run(model(the_spec)).status), jobs=(running,))
    progressing = next(c for c in result.status.conditions if c.type == "Progressing")
    assert progressing.message.startswith(f"Job {name} is optimizing the model: ")
    assert "2 of 3 candidates finished" in progressing.message
    assert result.events == ()  # progress is status, not an event per step


# A Job pod whose caBundle ConfigMap does not exist, as the API server shows it (Kubernetes
# 1.31): scheduled, no sandbox, the container waiting ContainerCreating with no message. The
# cause (FailedMount: configmap "corp-ca" not found) is only in the pod's events.
def mount_stuck(ready_since: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits-opt-1-abcde", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodReadyToStartContainers",
                    "status": "False",
                    "lastTransitionTime": ready_since,
                },
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": "optimizer",
                    "image": "optiserve/optimizer:1",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }
            ],
            "qosClass": "Burstable",
            "startTime": "2026-01-01T00:00:00Z",
        },
    }


def test_a_pod_stuck_on_a_missing_configmap_mount_is_reported_after_a_while() -> None:
    now = dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC)
    reason, message = blocked([mount_stuck("2026-01-01T00:00:00Z")], now)
    assert reason == "ContainersNotStarting"
    assert message.startswith("pod digits-opt-1-abcde cannot start: its volumes or sandbox ")
    assert "after 300s" in message and "spec.objectStore.caBundle" in message
    assert "FailedMount" in message


def test_a_pod_only_just_scheduled_or_pulling_its_image_is_not_blocked() -> None:
    now = dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC)
    # Sandbox not ready for a minute: a normal start, not yet blocked.
    assert blocked([mount_stuck("2026-01-01T00:04:00Z")], now) == ("", "")
    # Sandbox ready, container still ContainerCreating: an image pull, however long.
    pulling = mount_stuck("2026-01-01T00:00:00Z")
    pulling["status"]["conditions"][0]["status"] = "True"
    assert blocked([pulling], now) == ("", "")
    # Without a clock (or the condition, before Kubernetes 1.29) nothing is guessed.
    assert blocked([mount_stuck("2026-01-01T00:00:00Z")]) == ("", "")
    older = mount_stuck("2026-01-01T00:00:00Z")
    older["status"]["conditions"] = older["status"]["conditions"][1:]
    assert blocked([older], now) == ("", "")


def test_a_pod_stuck_on_a_mount_makes_a_degraded_condition_and_one_warning() -> None:
    now = dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC)
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    name = job_name(OWNER.name, digest)
    started = run(model(the_spec))
    stuck = job_state(_raw_job(name, digest), [mount_stuck("2026-01-01T00:00:00Z")], "", now)
    assert stuck.phase == "active" and stuck.blocked_reason == "ContainersNotStarting"
    result = run(model(the_spec, started.status), jobs=(stuck,))
    assert condition(result, "Degraded") == ("True", "ContainersNotStarting")
    degraded = next(c for c in result.status.conditions if c.type == "Degraded")
    assert f"Job {name}: pod digits-opt-1-abcde cannot start: " in degraded.message
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "ContainersNotStarting")]

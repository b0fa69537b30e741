"""The reconcile decision, pass by pass, as the operator would see the cluster move."""

from __future__ import annotations

from dataclasses import replace

from optiserve.api import AutoscalingSpec
from optiserve.api.network import NetworkPolicySpec
from optiserve.api.status import OptimizedModelStatus
from optiserve.render.kubernetes import job_name
from optiserve_operator.observe import ANNOTATION_FAILED_ROLLOUT
from optiserve_operator.reconcile import Observed, plan, recipe_digest
from tests.operator.helpers import (
    CONFIG,
    OWNER,
    condition,
    deployment,
    job,
    model,
    run,
    spec,
    summary_message,
)


def kinds(manifests: tuple[dict[str, object], ...]) -> list[object]:
    return [m["kind"] for m in manifests]


def served_digest(result_apply: tuple[dict[str, object], ...]) -> str:
    deployment_manifest = result_apply[0]
    template = deployment_manifest["spec"]["template"]  # type: ignore[index]
    return str(template["metadata"]["annotations"]["optiserve.io/artifact-digest"])


def test_a_new_model_gets_exactly_one_job_and_is_optimizing() -> None:
    the_spec = spec()
    result = run(model(the_spec))
    digest = recipe_digest(OWNER.name, the_spec)
    assert kinds(result.create) == ["ConfigMap", "Job"]
    assert result.create[1]["metadata"]["name"] == job_name("digits", digest)
    assert result.apply == ()
    assert result.status.phase == "Optimizing"
    assert condition(result, "Progressing") == ("True", "Optimizing")
    assert condition(result, "Reconciling")[0] == "True"
    assert condition(result, "Ready") == ("False", "Optimizing")
    assert result.status.observed_generation == 1
    assert all(c.observed_generation == 1 for c in result.status.conditions)
    assert [e.reason for e in result.events] == ["JobCreated"]
    assert result.requeue_after == CONFIG.poll_seconds


def test_a_running_job_creates_nothing_more() -> None:
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    first = run(model(the_spec))
    running = job(job_name("digits", digest), digest, "active")
    again = run(model(the_spec, first.status), jobs=(running,))
    assert again.create == () and again.apply == ()
    assert again.status.phase == "Optimizing"
    assert again.events == ()


def test_success_records_the_artifact_then_rolls_out_then_ready() -> None:
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    name = job_name("digits", digest)
    started = run(model(the_spec))
    done = job(name, digest, "succeeded", summary_message(digest))
    deploying = run(model(the_spec, started.status), jobs=(done,), now="2026-01-01T00:05:00Z")
    assert deploying.create == ()
    assert kinds(deploying.apply) == ["Deployment", "Service", "PodDisruptionBudget"]
    assert served_digest(deploying.apply) == digest
    status = deploying.status
    assert status.phase == "Deploying"
    assert status.artifact is not None and status.artifact.digest == digest
    folder = f"optiserve/{OWNER.namespace}/{OWNER.name}"  # the model's own folder
    assert status.artifact.uri == f"pvc://model-store/{folder}/{digest}/model_repository"
    assert status.artifact.precision == "int8"
    assert status.metrics is not None and status.metrics.speedup == "2.1x"
    assert [c.name for c in status.candidates] == ["fp32", "int8-dynamic"]
    assert condition(deploying, "Optimized") == ("True", "Optimized")
    assert "Optimized" in [e.reason for e in deploying.events]
    assert status.endpoint == "http://digits.ml.svc:8000"
    assert status.grpc_endpoint == "digits.ml.svc:8001"
    # The Triton pod is sized from the Job's measurement, and status says how.
    assert status.artifact.serving_cost is not None
    triton = deploying.apply[0]["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["requests"]["memory"] == "1002Mi"  # (412 + 256 MiB) x 1.5
    assert status.serving is not None and status.serving.resources is not None
    assert status.serving.resources.requests["memory"] == "1002Mi"
    assert status.serving.resources.basis.startswith("measured: (model RSS 412 MiB")

    ready = run(model(the_spec, status), jobs=(done,), dep=deployment(digest))
    assert ready.status.phase == "Ready"
    assert condition(ready, "Ready") == ("True", "Ready")
    assert condition(ready, "Progressing") == ("False", "Complete")
    assert condition(ready, "Degraded") == ("False", "AsExpected")
    assert condition(ready, "Reconciling")[0] == "False"
    assert condition(ready, "Stalled")[0] == "False"
    assert ready.status.last_good_artifact == status.artifact
    assert ready.status.replicas == 2
    assert ready.requeue_after == CONFIG.resync_seconds
    optimized_before = next(c for c in status.conditions if c.type == "Optimized")
    optimized_after = next(c for c in ready.status.conditions if c.type == "Optimized")
    assert optimized_after.last_transition_time == optimized_before.last_transition_time


def test_a_settled_model_is_a_fixed_point_even_after_the_job_is_gone() -> None:
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    done = job(job_name("digits", digest), digest, "succeeded", summary_message(digest))
    status = run(model(the_spec, run(model(the_spec)).status), jobs=(done,)).status
    ready = run(model(the_spec, status), dep=deployment(digest))
    again = run(model(the_spec, ready.status), dep=deployment(digest), now="2026-02-01T00:00:00Z")
    assert again.create == ()
    assert again.status == ready.status  # same times too: nothing moved
    assert again.events == ()
    assert again.apply == ready.apply  # SSA of identical objects changes nothing


def ready_status(quant: str = "int8") -> tuple[OptimizedModelStatus, str]:
    the_spec = spec(precision=quant)
    digest = recipe_digest(OWNER.name, the_spec)
    done = job(job_name("digits", digest), digest, "succeeded", summary_message(digest, quant))
    status = run(model(the_spec, run(model(the_spec)).status), jobs=(done,)).status
    return run(model(the_spec, status), dep=deployment(digest)).status, digest


def test_a_spec_change_starts_a_new_job_and_keeps_serving_the_old_artifact() -> None:
    old_status, old_digest = ready_status("int8")
    new_spec = spec(precision="fp32")
    new_digest = recipe_digest(OWNER.name, new_spec)
    assert new_digest != old_digest
    old_job = job(job_name("digits", old_digest), old_digest, "active")
    result = run(
        model(new_spec, old_status, generation=2), jobs=(old_job,), dep=deployment(old_digest)
    )
    assert kinds(result.create) == ["ConfigMap", "Job"]
    assert result.create[1]["metadata"]["name"] == job_name("digits", new_digest)
    assert served_digest(result.apply) == old_digest
    assert result.delete_jobs == (job_name("digits", old_digest),)
    assert result.status.phase == "Optimizing"
    assert result.status.observed_generation == 2

    done = job(
        job_name("digits", new_digest), new_digest, "succeeded", summary_message(new_digest, "fp32")
    )
    rolled = run(
        model(new_spec, result.status, generation=2), jobs=(done,), dep=deployment(old_digest)
    )
    assert served_digest(rolled.apply) == new_digest
    assert rolled.status.phase == "Deploying"


def test_a_failed_job_degrades_keeps_serving_and_is_not_retried() -> None:
    old_status, old_digest = ready_status("int8")
    new_spec = spec(precision="fp32")
    new_digest = recipe_digest(OWNER.name, new_spec)
    name = job_name("digits", new_digest)
    failed = job(name, new_digest, "failed", "exit code 3: accuracy gate failed", reason="Error")
    started = run(model(new_spec, old_status, generation=2), dep=deployment(old_digest))
    result = run(model(new_spec, started.status, 2), jobs=(failed,), dep=deployment(old_digest))
    assert result.create == ()
    assert served_digest(result.apply) == old_digest
    assert result.status.phase == "Failed"
    assert condition(result, "Degraded") == ("True", "OptimizationFailed")
    assert condition(result, "Stalled")[0] == "True"
    assert condition(result, "Ready") == ("False", "OptimizationFailed")
    degraded = next(c for c in result.status.conditions if c.type == "Degraded")
    assert "Error" in degraded.message and "accuracy gate failed" in degraded.message
    assert [e.type for e in result.events] == ["Warning"]
    assert result.status.last_good_artifact is not None
    assert result.status.last_good_artifact.digest == old_digest

    # The failed Job's TTL ran out: still no new Job.
    gone = run(model(new_spec, result.status, 2), dep=deployment(old_digest))
    assert gone.create == () and gone.status.phase == "Failed"
    # A new optiserve.io/retry value, and only that, starts one.
    retried = run(
        model(new_spec, gone.status, 2, annotations={"optiserve.io/retry": "1"}),
        dep=deployment(old_digest),
    )
    assert kinds(retried.create) == ["ConfigMap", "Job"]
    assert retried.create[1]["metadata"]["name"] == job_name("digits", new_digest, "1")


def test_a_rollout_past_its_deadline_rolls_back_and_stays_back() -> None:
    old_status, old_digest = ready_status("int8")
    new_spec = spec(precision="fp32")
    new_digest = recipe_digest(OWNER.name, new_spec)
    done = job(job_name("digits", new_digest), new_digest, "succeeded", summary_message(new_digest))
    deploying = run(model(new_spec, old_status, 2), jobs=(done,), dep=deployment(old_digest))
    stuck = deployment(new_digest, ready=False, deadline=True)
    result = run(model(new_spec, deploying.status, 2), jobs=(done,), dep=stuck)
    assert served_digest(result.apply) == old_digest
    annotations = result.apply[0]["metadata"]["annotations"]
    assert annotations[ANNOTATION_FAILED_ROLLOUT] == f"{new_digest}/"
    assert result.status.phase == "Failed"
    assert condition(result, "Degraded") == ("True", "RolledBack")
    assert "RolledBack" in [e.reason for e in result.events]
    # Next pass: the Deployment carries the marker and serves the old artifact again.
    back = deployment(old_digest, marker=f"{new_digest}/")
    settled = run(model(new_spec, result.status, 2), jobs=(done,), dep=back)
    assert served_digest(settled.apply) == old_digest
    assert condition(settled, "Degraded") == ("True", "RolledBack")
    assert settled.status.last_good_artifact is not None
    assert settled.status.last_good_artifact.digest == old_digest


def test_without_rollback_a_stuck_rollout_stays_and_degrades() -> None:
    the_spec = spec()
    obj_spec = the_spec.model_copy(
        update={"serving": the_spec.serving.model_copy(update={"rollback_on_failure": False})}
    )
    digest = recipe_digest(OWNER.name, obj_spec)
    done = job(job_name("digits", digest), digest, "succeeded", summary_message(digest))
    first = run(model(obj_spec, run(model(obj_spec)).status), jobs=(done,))
    stuck = run(
        model(obj_spec, first.status),
        jobs=(done,),
        dep=deployment(digest, ready=False, deadline=True),
    )
    assert served_digest(stuck.apply) == digest
    assert condition(stuck, "Degraded") == ("True", "ProgressDeadlineExceeded")


def test_autoscaled_deployment_omits_replicas() -> None:
    the_spec = spec()
    scaled = the_spec.model_copy(
        update={
            "serving": the_spec.serving.model_copy(
                update={"autoscaling": AutoscalingSpec(max_replicas=3)}
            )
        }
    )
    status, digest = ready_status()
    result = run(model(scaled, status), dep=deployment(digest))
    assert "replicas" not in result.apply[0]["spec"]


def test_an_unreadable_summary_degrades_without_a_new_job() -> None:
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    done = job(job_name("digits", digest), digest, "succeeded", "not json")
    result = run(model(the_spec, run(model(the_spec)).status), jobs=(done,))
    assert result.create == () and result.apply == ()
    assert condition(result, "Degraded") == ("True", "SummaryUnreadable")
    assert replace(result, events=()).status.phase == "Failed"


def test_secrets_never_reach_status_or_events() -> None:
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    leaky = "download https://bob:hunter2@example.com/m.onnx?token=abc123 failed"
    failed = job(job_name("digits", digest), digest, "failed", leaky, reason="Error")
    result = run(model(the_spec, run(model(the_spec)).status), jobs=(failed,))
    text = result.status.model_dump_json() + repr(result.events)
    assert "hunter2" not in text and "abc123" not in text
    assert "example.com" in text


def test_the_autoscaler_follows_the_deployment_and_a_dropped_one_is_deleted() -> None:
    status, digest = ready_status()
    base = spec(precision="int8")
    scaled = base.model_copy(
        update={"serving": base.serving.model_copy(update={"autoscaling": AutoscalingSpec()})}
    )
    result = run(model(scaled, status), dep=deployment(digest))
    assert kinds(result.apply) == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]
    assert result.delete_autoscalers == ()
    dropped = run(
        model(base, status),
        dep=deployment(digest),
        autoscalers=frozenset({"HorizontalPodAutoscaler"}),
    )
    assert kinds(dropped.apply) == ["Deployment", "Service", "PodDisruptionBudget"]
    assert dropped.delete_autoscalers == ("HorizontalPodAutoscaler",)


def test_no_autoscaler_before_anything_is_served() -> None:
    base = spec()
    scaled = base.model_copy(
        update={"serving": base.serving.model_copy(update={"autoscaling": AutoscalingSpec()})}
    )
    assert run(model(scaled)).apply == ()


def test_the_network_policy_is_applied_when_enabled_and_deleted_when_switched_off() -> None:
    status, digest = ready_status()
    base = spec(precision="int8")
    guarded = base.model_copy(
        update={
            "serving": base.serving.model_copy(
                update={"network_policy": NetworkPolicySpec(enabled=True)}
            )
        }
    )
    result = run(model(guarded, status), dep=deployment(digest))
    assert kinds(result.apply) == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ]
    assert not result.delete_network_policy
    # Still wanted and already there: applied again (drift repaired), never deleted.
    kept = plan(
        Observed(model=model(guarded, status), deployment=deployment(digest), network_policy=True),
        "2026-01-01T00:00:00Z",
        CONFIG,
    )
    assert "NetworkPolicy" in kinds(kept.apply) and not kept.delete_network_policy
    # The spec switched it off: not applied, and the one that exists is deleted.
    dropped = plan(
        Observed(model=model(base, status), deployment=deployment(digest), network_policy=True),
        "2026-01-01T00:00:00Z",
        CONFIG,
    )
    assert "NetworkPolicy" not in kinds(dropped.apply)
    assert dropped.delete_network_policy
    # Off and absent: nothing to delete.
    assert not run(model(base, status), dep=deployment(digest)).delete_network_policy


def test_a_new_model_dry_runs_its_network_policy_before_the_job_runs() -> None:
    base = spec()
    guarded = base.model_copy(
        update={
            "serving": base.serving.model_copy(
                update={"network_policy": NetworkPolicySpec(enabled=True)}
            )
        }
    )
    assert "NetworkPolicy" in kinds(run(model(guarded)).dry_run)
    assert "NetworkPolicy" not in kinds(run(model(base)).dry_run)

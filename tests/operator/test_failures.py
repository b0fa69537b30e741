"""Safe by default: every accepted spec reconciles or says why, and says it once.

The error classification, and ``plan`` for specs that cannot be rendered, children the API
server refused, and Job pods that cannot start. The same paths run against the real API
server in tests/e2e/test_safe_by_default.py.
"""

from __future__ import annotations

import pytest
import urllib3

from optiserve.api import AutoscalingSpec, OptimizedModelSpec
from optiserve.api.status import OptimizedModelStatus
from optiserve.render.kubernetes import job_name
from optiserve_operator.failures import (
    MESSAGE_LIMIT,
    REASON_CHILD_REJECTED,
    REASON_FORBIDDEN,
    REASON_RENDER_FAILED,
    REASON_TRANSIENT,
    classify,
    held,
    retrying_status,
    stalled_status,
)
from optiserve_operator.kube_transport import KubeError
from optiserve_operator.reconcile import recipe_digest
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

NOW = "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (422, REASON_CHILD_REJECTED),
        (400, REASON_CHILD_REJECTED),
        (403, REASON_FORBIDDEN),
        (404, REASON_CHILD_REJECTED),  # e.g. a ScaledObject without KEDA installed
        (413, REASON_CHILD_REJECTED),
    ],
)
def test_refusals_of_the_api_server_are_permanent(status: int, reason: str) -> None:
    err = KubeError(status, "Invalid", 'Service "x" is invalid: metadata.name: must be no more')
    failure = classify("apply Service x", err)
    assert failure.permanent
    assert failure.reason == reason
    assert failure.message.startswith("apply Service x: refused by the API server: ")
    assert "metadata.name" in failure.message


@pytest.mark.parametrize(
    "err",
    [
        KubeError(500, "InternalError", "etcdserver: request timed out"),
        KubeError(503, "ServiceUnavailable", ""),
        KubeError(429, "TooManyRequests", "storage is (re)initializing"),
        KubeError(409, "Conflict", "the object has been modified"),
        KubeError(401, "Unauthorized", "token expired"),
        KubeError(408, "Timeout", ""),
        KubeError(504, "Timeout", ""),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
        urllib3.exceptions.MaxRetryError(None, "/api", "connection refused"),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("Connection aborted."),
        KeyError("metadata"),  # a bug of ours is not the user's error either
    ],
)
def test_server_side_and_connection_errors_are_retried(err: Exception) -> None:
    failure = classify("create Job x", err)
    assert not failure.permanent
    assert failure.reason == REASON_TRANSIENT
    assert failure.message.startswith("create Job x: ")


def test_messages_are_one_bounded_redacted_line() -> None:
    huge = "Traceback (most recent call last):\n" + "x" * 100_000
    err = KubeError(422, "Invalid", f"https://user:hunter2@registry/x token=abc\n{huge}")
    failure = classify("create Job x", err)
    assert len(failure.message) <= MESSAGE_LIMIT
    assert "\n" not in failure.message
    assert "hunter2" not in failure.message and "abc" not in failure.message.split("token=")[1][:5]


def _bad_autoscaling(target: str = "fast") -> OptimizedModelSpec:
    # model_copy skips validation: what an older or laxer schema lets through.
    base = spec()
    autoscaling = AutoscalingSpec().model_copy(update={"target": target})
    return base.model_copy(
        update={"serving": base.serving.model_copy(update={"autoscaling": autoscaling})}
    )


def test_a_spec_that_cannot_be_rendered_stalls_at_once_without_a_job_and_says_why() -> None:
    bad = _bad_autoscaling()
    result = run(model(bad))
    assert result.create == () and result.apply == () and result.dry_run == ()
    assert result.status.phase == "Failed"
    assert condition(result, "Stalled") == ("True", REASON_RENDER_FAILED)
    assert condition(result, "Degraded") == ("True", REASON_RENDER_FAILED)
    assert condition(result, "Ready") == ("False", REASON_RENDER_FAILED)
    assert condition(result, "Reconciling")[0] == "False"
    stalled = next(c for c in result.status.conditions if c.type == "Stalled")
    assert "'fast'" in stalled.message and "autoscaler" in stalled.message
    assert [(e.type, e.reason) for e in result.events] == [("Warning", REASON_RENDER_FAILED)]
    assert result.requeue_after is None  # no retry loop


def test_a_stalled_model_is_left_alone_until_its_generation_or_retry_token_changes() -> None:
    bad = _bad_autoscaling()
    first = run(model(bad))
    again = run(model(bad, first.status), now="2026-01-01T01:00:00Z")
    assert again.status == first.status  # nothing moves, not even a timestamp
    assert again.events == () and again.create == () and again.requeue_after is None

    fixed = spec()
    after_fix = run(model(fixed, first.status, generation=2))
    assert [m["kind"] for m in after_fix.create] == ["ConfigMap", "Job"]
    assert after_fix.status.phase == "Optimizing"
    assert condition(after_fix, "Stalled")[0] == "False"

    # A new retry token is tried again (and refused again: same reason, so no new event).
    retried = run(model(bad, first.status, annotations={"optiserve.io/retry": "1"}))
    assert retried.status.job_name != first.status.job_name
    assert condition(retried, "Stalled") == ("True", REASON_RENDER_FAILED)
    assert held(retried.status, 1, str(retried.status.job_name))


def test_the_serving_children_are_checked_by_the_api_server_before_the_job_runs() -> None:
    base = spec()
    autoscaled = base.model_copy(
        update={"serving": base.serving.model_copy(update={"autoscaling": AutoscalingSpec()})}
    )
    result = run(model(autoscaled))
    assert [m["kind"] for m in result.create] == ["ConfigMap", "Job"]
    assert [m["kind"] for m in result.dry_run] == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]
    digest = recipe_digest(OWNER.name, autoscaled)
    template = result.dry_run[0]["spec"]["template"]
    assert template["metadata"]["annotations"]["optiserve.io/artifact-digest"] == digest
    # Only when a Job is created: a running one is not checked again every pass.
    running = job(job_name("digits", digest), digest, "active")
    assert run(model(autoscaled, result.status), jobs=(running,)).dry_run == ()


def test_a_refused_deployment_keeps_the_artifact_and_a_fixed_spec_serves_it() -> None:
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    done = job(job_name("digits", digest), digest, "succeeded", summary_message(digest))
    deploying = run(model(the_spec, run(model(the_spec)).status), jobs=(done,))
    assert [m["kind"] for m in deploying.apply] == ["Deployment", "Service", "PodDisruptionBudget"]

    # What the controller writes when the API server refuses the Deployment (422).
    refused = classify(
        "apply Deployment digits",
        KubeError(422, "Invalid", "spec.template.spec.containers[0].image: Required value"),
    )
    stalled = stalled_status(deploying.status, 1, refused, NOW)
    assert stalled.phase == "Failed"
    assert stalled.artifact == deploying.status.artifact
    assert [(c.type, c.status, c.reason) for c in stalled.conditions if c.status == "True"] == [
        ("Optimized", "True", "Optimized"),
        ("Degraded", "True", REASON_CHILD_REJECTED),
        ("Stalled", "True", REASON_CHILD_REJECTED),
    ]
    held_pass = run(model(the_spec, stalled), jobs=(done,))
    assert held_pass.apply == () and held_pass.events == () and held_pass.requeue_after is None

    # The user fixes the serving image: generation 2, same recipe, no new Job, served.
    fixed = run(model(the_spec, stalled, generation=2))
    assert fixed.create == ()
    assert [m["kind"] for m in fixed.apply] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert fixed.status.phase == "Deploying"
    ready = run(model(the_spec, fixed.status, generation=2), dep=deployment(digest))
    assert ready.status.phase == "Ready"
    assert condition(ready, "Stalled")[0] == "False"


def test_held_needs_a_permanent_reason_of_this_generation() -> None:
    refused = classify("create Job x", KubeError(422, "Invalid", "bad"))
    status = stalled_status(OptimizedModelStatus(job_name="x"), 3, refused, NOW)
    assert held(status, 3, "x")
    assert not held(status, 4, "x")  # spec changed
    assert not held(status, 3, "x-retried")  # retry token changed
    transient = classify("create Job x", KubeError(503, "ServiceUnavailable", "down"))
    assert not held(stalled_status(OptimizedModelStatus(job_name="x"), 3, transient, NOW), 3, "x")


def test_a_transient_error_is_shown_and_repeating_it_writes_nothing_new() -> None:
    failure = classify("create Job x", KubeError(503, "ServiceUnavailable", "etcd is down"))
    first = retrying_status(OptimizedModelStatus(phase="Optimizing"), 1, failure, NOW)
    cond = next(c for c in first.conditions if c.type == "Reconciling")
    assert (cond.status, cond.reason) == ("True", REASON_TRANSIENT)
    assert "etcd is down" in cond.message
    assert first.phase == "Optimizing"  # nothing else is claimed
    assert retrying_status(first, 1, failure, "2026-01-01T00:01:00Z") == first
    assert not held(first, 1, "")


def test_poll_and_resync_are_unchanged_for_healthy_models() -> None:
    result = run(model(spec()))
    assert result.requeue_after == CONFIG.poll_seconds


def test_redaction_is_bounded_and_never_leaves_half_a_credential() -> None:
    import time

    from optiserve_operator.summary import redact

    # The cut falls inside a URL's password: no part of the password may remain.
    text = "pulling " * 1_000 + "https://user:" + "p" * 50_000 + "@registry/x"
    assert "pp" not in redact(text)
    started = time.perf_counter()
    for huge in ("x" * 10_000_000, "a://" * 1_000_000, "token=" * 1_000_000):
        assert len(redact(huge)) <= MESSAGE_LIMIT * 2
    # Generous: about 1 ms each here; a quadratic pattern took 18 s on 100 kB.
    assert time.perf_counter() - started < 2.0


def test_an_artifact_no_pod_can_mount_is_an_optimization_failure_not_a_stall() -> None:
    from optiserve.api.status import Artifact

    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    status = OptimizedModelStatus(artifact=Artifact(digest=digest, uri="s3://bucket/model"))
    result = run(model(the_spec, status))
    assert result.apply == ()
    assert condition(result, "Degraded") == ("True", "InvalidArtifact")
    assert not held(result.status, 1, str(result.status.job_name))


@pytest.mark.parametrize("name", ["a" * 64, "my.model", "1model", "Model", "model-"])
def test_a_name_the_children_cannot_carry_stalls_before_anything_is_created(name: str) -> None:
    from dataclasses import replace

    from optiserve_operator.failures import REASON_INVALID_NAME, name_problem

    problem = name_problem(name)
    assert problem is not None and "63" in problem
    state = replace(model(spec()), owner=replace(OWNER, name=name))
    result = run(state)
    assert result.create == () and result.dry_run == () and result.apply == ()
    assert condition(result, "Stalled") == ("True", REASON_INVALID_NAME)
    assert result.requeue_after is None


def test_names_the_children_can_carry() -> None:
    from optiserve_operator.failures import name_problem

    for name in ("a", "digits", "minilm-l6-v2", "a" * 63):
        assert name_problem(name) is None

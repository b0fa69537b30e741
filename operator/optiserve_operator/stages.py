"""Where a model's optimization and its rollout stand, read from what one pass observed.

Pure functions of ``Observed`` used by ``reconcile.plan``: which Job result (if any) gives the
artifact, whether the Deployment serves it yet or was rolled back, and the phase and
conditions that follow from both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from optiserve.api.status import (
    OPTIMIZED,
    Artifact,
)
from optiserve.render.job import artifact_uri
from optiserve.render.serving_config import rollout_settings, settings_fingerprint
from optiserve_operator import conditions as c
from optiserve_operator.pass_io import Event, Observed
from optiserve_operator.summary import Summary, SummaryError, parse_summary


@dataclass(frozen=True)
class Optimization:
    state: Literal["done", "running", "blocked", "failed", "create"]
    artifact: Artifact | None = None
    summary: Summary | None = None  # newly read from a finished Job in this pass
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class Rollout:
    state: Literal["none", "rolling", "ready", "failed", "rolled_back"]
    serve: Artifact | None = None
    failed_marker: str | None = None
    message: str = ""
    events: tuple[Event, ...] = field(default_factory=tuple)


def optimization_stage(obs: Observed, digest: str, wanted_job: str) -> Optimization:
    status = obs.model.status
    if status.artifact is not None and status.artifact.digest == digest:
        return Optimization("done", artifact=status.artifact)
    owner = obs.model.owner
    default_uri = artifact_uri(obs.model.spec, digest, namespace=owner.namespace, name=owner.name)
    for job in obs.jobs:
        # Any finished Job of this digest will do, including one from an earlier retry.
        if job.digest == digest and job.phase == "succeeded":
            try:
                summary = parse_summary(job.message, digest, default_uri)
            except SummaryError as err:
                if job.name != wanted_job:
                    continue
                return Optimization("failed", reason=c.REASON_SUMMARY_UNREADABLE, message=str(err))
            return Optimization("done", artifact=summary.artifact, summary=summary)
    current = next((j for j in obs.jobs if j.name == wanted_job), None)
    if current is not None and current.phase == "failed":
        message = f"Job {current.name} failed ({current.failure_reason}): {current.failure_message}"
        return Optimization("failed", reason=c.REASON_JOB_FAILED, message=message)
    if current is not None and current.blocked_reason:
        message = f"Job {current.name}: {current.blocked_message}"
        return Optimization("blocked", reason=current.blocked_reason, message=message)
    if current is not None:
        message = f"Job {current.name} is optimizing the model"
        if current.progress:
            message += f": {current.progress}"
        return Optimization("running", message=message)
    # The failed Job may be gone (ttlSecondsAfterFinished); status remembers the failure, so
    # only a new digest or a new optiserve.io/retry value starts another Job: no retry storm.
    optimized = c.find(status.conditions, OPTIMIZED)
    if (
        status.job_name == wanted_job
        and optimized is not None
        and optimized.reason in (c.REASON_JOB_FAILED, c.REASON_SUMMARY_UNREADABLE)
    ):
        return Optimization("failed", reason=optimized.reason, message=optimized.message)
    return Optimization("create", message=f"Job {wanted_job} is optimizing the model")


def rollout_stage(
    obs: Observed, candidate: Artifact | None, last_good: Artifact | None, retry: str
) -> Rollout:
    """Which artifact to serve, and how its rollout stands."""
    if candidate is None:
        return Rollout("none")
    dep = obs.deployment
    serving = obs.model.spec.serving
    marker = f"{candidate.digest}/{retry}"
    if dep is not None and dep.failed_rollout == marker and last_good is not None:
        state: Literal["failed", "rolled_back"] = "rolled_back"
        if dep.artifact_digest == last_good.digest and dep.observed and dep.deadline_exceeded:
            state = "failed"  # the good artifact does not come up either
        message = (
            f"artifact {candidate.digest[:12]} was not Ready within "
            f"{serving.rollout_deadline_seconds}s; serving {last_good.digest[:12]} again"
        )
        return Rollout(state, serve=last_good, failed_marker=marker, message=message)
    on_candidate = dep is not None and dep.artifact_digest == candidate.digest and dep.observed
    if dep is not None and on_candidate and dep.deadline_exceeded:
        message = (
            f"artifact {candidate.digest[:12]} was not Ready within "
            f"{serving.rollout_deadline_seconds}s"
        )
        can_roll_back = last_good is not None and last_good.digest != candidate.digest
        if serving.rollback_on_failure and can_roll_back:
            assert last_good is not None
            message += f"; rolling back to {last_good.digest[:12]}"
            event = Event("Warning", c.REASON_ROLLED_BACK, message)
            return Rollout(
                "rolled_back",
                serve=last_good,
                failed_marker=marker,
                message=message,
                events=(event,),
            )
        return Rollout("failed", serve=candidate, message=message)
    # Ready only once the pods run the spec's serving settings too (no annotation: older pods).
    settings = settings_fingerprint(rollout_settings(serving, candidate.tuning))
    current = dep is not None and dep.serving_config in (None, settings)
    if dep is not None and on_candidate and dep.rolled_out and current:
        return Rollout("ready", serve=candidate)
    what = f"serving settings {settings[:8]} of " if on_candidate and not current else ""
    return Rollout("rolling", serve=candidate, message=f"rolling out {what}{candidate.digest[:12]}")


def stage_outcome(opt: Optimization, rollout: Rollout) -> c.Outcome:
    if opt.state == "failed":
        optimized = c.Wanted(OPTIMIZED, "False", opt.reason, opt.message)
        served = f"; still serving {rollout.serve.digest[:12]}" if rollout.serve else ""
        return c.Outcome("Failed", optimized, opt.reason, opt.message + served)
    if opt.state == "blocked":
        # The Job stays: the pod starts by itself once a GPU frees up or the claim appears.
        optimized = c.Wanted(OPTIMIZED, "False", opt.reason, opt.message)
        return c.Outcome("Pending", optimized, opt.reason, opt.message, stuck=True)
    if opt.state in ("running", "create"):
        optimized = c.Wanted(OPTIMIZED, "False", c.REASON_OPTIMIZING, opt.message)
        return c.Outcome("Optimizing", optimized, c.REASON_OPTIMIZING, opt.message)
    assert opt.artifact is not None
    done = opt.artifact
    optimized = c.Wanted(
        OPTIMIZED, "True", c.REASON_OPTIMIZED, f"{done.precision} {done.format} at {done.uri}"
    )
    if rollout.state == "ready":
        return c.Outcome("Ready", optimized, c.REASON_READY, f"serving {done.digest[:12]}")
    if rollout.state == "rolled_back":
        return c.Outcome("Failed", optimized, c.REASON_ROLLED_BACK, rollout.message)
    if rollout.state == "failed":
        return c.Outcome("Failed", optimized, c.REASON_DEADLINE, rollout.message)
    return c.Outcome("Deploying", optimized, c.REASON_ROLLING_OUT, rollout.message)

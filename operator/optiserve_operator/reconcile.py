"""One reconcile pass as a pure function: what was observed in, what to do out.

Level-based, in the controller-runtime manner: ``plan`` looks only at the current state of the
OptimizedModel and its children, never at what changed, so calling it twice, or after a crash
at any line, converges to the same place. Children have deterministic names (the Job's comes
from the recipe digest), so "create" is create-or-read and a restart creates nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from optiserve.api import OptimizedModelSpec
from optiserve.api.status import DEGRADED, OPTIMIZED, READY, Artifact, OptimizedModelStatus
from optiserve.digest import spec_recipe_digest
from optiserve.policy import Policy, describe, violations
from optiserve.render.autoscaling import render_autoscaler
from optiserve.render.deployment import (
    ArtifactLocationError,
    render_deployment,
    render_service,
    selector_string,
)
from optiserve.render.job import artifact_uri, render_job, render_spec_config_map
from optiserve.render.kubernetes import ANNOTATION_RETRY, Manifest, Owner, endpoint, job_name
from optiserve_operator import conditions as c
from optiserve_operator.observe import ANNOTATION_FAILED_ROLLOUT, DeploymentState, JobState
from optiserve_operator.summary import Summary, SummaryError, parse_summary, redact


@dataclass(frozen=True)
class Config:
    optimizer_image: str
    service_account: str | None = None
    poll_seconds: float = 10.0  # while something is in progress (child events come sooner)
    resync_seconds: float = 300.0  # when settled
    policy: Policy | None = None  # the administrator's (optiserve.policy); None: structural only


@dataclass(frozen=True)
class ModelState:
    owner: Owner
    generation: int
    annotations: Mapping[str, str]
    spec: OptimizedModelSpec
    status: OptimizedModelStatus


AUTOSCALER_KINDS = ("HorizontalPodAutoscaler", "ScaledObject")


@dataclass(frozen=True)
class Observed:
    model: ModelState
    jobs: tuple[JobState, ...] = ()
    deployment: DeploymentState | None = None
    autoscalers: frozenset[str] = frozenset()  # kinds of our autoscalers that exist


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    status: OptimizedModelStatus
    create: tuple[Manifest, ...] = ()  # create, or read when it exists (409)
    apply: tuple[Manifest, ...] = ()  # server-side apply, field manager "optiserve"
    delete_jobs: tuple[str, ...] = ()  # still-running Jobs of a superseded digest
    delete_autoscalers: tuple[str, ...] = ()  # kinds no longer wanted (spec changed)
    events: tuple[Event, ...] = ()
    requeue_after: float = 300.0


@dataclass(frozen=True)
class Optimization:
    state: Literal["done", "running", "failed", "create"]
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


def recipe_digest(name: str, spec: OptimizedModelSpec) -> str:
    return spec_recipe_digest(name, spec.source, spec.optimization, spec.serving)


def _optimization(obs: Observed, digest: str, wanted_job: str) -> Optimization:
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
    if current is not None:
        return Optimization("running", message=f"Job {current.name} is optimizing the model")
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


def _rollout(
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
    if dep is not None and on_candidate and dep.rolled_out:
        return Rollout("ready", serve=candidate)
    return Rollout("rolling", serve=candidate, message=f"rolling out {candidate.digest[:12]}")


def _outcome(opt: Optimization, rollout: Rollout) -> c.Outcome:
    if opt.state == "failed":
        optimized = c.Wanted(OPTIMIZED, "False", opt.reason, opt.message)
        served = f"; still serving {rollout.serve.digest[:12]}" if rollout.serve else ""
        return c.Outcome("Failed", optimized, opt.reason, opt.message + served)
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


def _transition_events(old: OptimizedModelStatus, new: OptimizedModelStatus) -> list[Event]:
    events = []
    for type_ in (OPTIMIZED, READY, DEGRADED):
        before, after = c.find(old.conditions, type_), c.find(new.conditions, type_)
        if after is None or (
            before and (before.status, before.reason) == (after.status, after.reason)
        ):
            continue
        if after.status == "True":
            kind: Literal["Normal", "Warning"] = "Warning" if type_ == DEGRADED else "Normal"
            events.append(Event(kind, after.reason, after.message))
    return events


def _denied(obs: Observed, now: str, config: Config, message: str) -> Plan:
    """The spec asks for what it may not: nothing is rendered or touched, the model is Stalled
    with reason PolicyDenied until its spec (or the policy) changes. What already runs stays."""
    status = obs.model.status
    reason = c.REASON_POLICY_DENIED
    optimized = c.Wanted(OPTIMIZED, "False", reason, message)
    outcome = c.Outcome("Failed", optimized, reason, message)
    generation = obs.model.generation
    conditions = c.merge_conditions(status.conditions, c.conditions_for(outcome), now, generation)
    new_status = status.model_copy(
        update={"observed_generation": generation, "phase": "Failed", "conditions": conditions}
    )
    return Plan(
        status=new_status,
        events=tuple(_transition_events(status, new_status)),  # Warning PolicyDenied, once
        requeue_after=config.resync_seconds,
    )


def plan(obs: Observed, now: str, config: Config) -> Plan:
    model = obs.model
    spec, status, owner = model.spec, model.status, model.owner
    refused = violations(spec, config.policy)
    if refused:
        return _denied(obs, now, config, redact(describe(refused)))
    digest = recipe_digest(owner.name, spec)
    retry = model.annotations.get(ANNOTATION_RETRY, "")
    wanted_job = job_name(owner.name, digest, retry)

    opt = _optimization(obs, digest, wanted_job)
    create: list[Manifest] = []
    events: list[Event] = []
    if opt.state == "create":
        create = [
            render_spec_config_map(owner, spec, digest, retry),
            render_job(
                owner,
                spec,
                digest,
                image=config.optimizer_image,
                retry=retry,
                service_account=config.service_account,
            ),
        ]
        events.append(Event("Normal", "JobCreated", opt.message))
    delete = tuple(j.name for j in obs.jobs if j.phase == "active" and j.digest != digest)
    events += [Event("Normal", "JobSuperseded", f"deleting Job {name}") for name in delete]

    candidate = opt.artifact if opt.state == "done" else status.artifact
    rollout = _rollout(obs, candidate, status.last_good_artifact, retry)
    events += rollout.events
    apply: list[Manifest] = []
    if rollout.serve is not None:
        try:
            deployment = render_deployment(owner, spec, rollout.serve)
        except ArtifactLocationError as err:
            opt = Optimization("failed", reason="InvalidArtifact", message=str(err))
            rollout = Rollout("none")
        else:
            if rollout.failed_marker:
                deployment["metadata"].setdefault("annotations", {})[ANNOTATION_FAILED_ROLLOUT] = (
                    rollout.failed_marker
                )
            apply = [deployment, render_service(owner)]
    # The autoscaler follows the Deployment it scales; without one the Deployment has no
    # replicas field to fight over, so it comes only once something is served.
    autoscaler = render_autoscaler(owner, spec.serving.autoscaling)
    if autoscaler is not None and apply:
        apply.append(autoscaler)
    wanted_kind = autoscaler["kind"] if autoscaler is not None else None
    stale = tuple(k for k in AUTOSCALER_KINDS if k in obs.autoscalers and k != wanted_kind)

    outcome = _outcome(opt, rollout)
    outcome = replace(outcome, message=redact(outcome.message))
    wanted = [replace(w, message=redact(w.message)) for w in c.conditions_for(outcome)]
    last_good = status.last_good_artifact
    if rollout.state == "ready" and rollout.serve is not None:
        last_good = rollout.serve
    summary = opt.summary
    dep = obs.deployment
    new_status = OptimizedModelStatus(
        observed_generation=model.generation,
        phase=outcome.phase,
        conditions=c.merge_conditions(status.conditions, wanted, now, model.generation),
        artifact=candidate,
        last_good_artifact=last_good,
        recipe_digest=digest,
        job_name=wanted_job,
        metrics=summary.metrics if summary else status.metrics,
        candidates=list(summary.candidates) if summary else status.candidates,
        endpoint=endpoint(owner.name, owner.namespace) if rollout.serve else status.endpoint,
        replicas=dep.ready_replicas if dep else 0,
        selector=selector_string(owner.name),
    )
    events += _transition_events(status, new_status)
    settled = outcome.phase in ("Ready", "Failed")
    return Plan(
        status=new_status,
        create=tuple(create),
        apply=tuple(apply),
        delete_jobs=delete,
        delete_autoscalers=stale,
        events=tuple(replace(e, message=redact(e.message)) for e in events),
        requeue_after=config.resync_seconds if settled else config.poll_seconds,
    )

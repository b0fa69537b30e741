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
from optiserve.api.status import (
    DEGRADED,
    OPTIMIZED,
    READY,
    Artifact,
    OptimizedModelStatus,
)
from optiserve.digest import spec_recipe_digest
from optiserve.policy import Policy, describe, violations
from optiserve.render.deployment import (
    ArtifactLocationError,
    selector_string,
    serving_status,
)
from optiserve.render.job import artifact_uri, render_job, render_spec_config_map
from optiserve.render.kubernetes import (
    ANNOTATION_RETRY,
    Manifest,
    Owner,
    endpoint,
    grpc_endpoint,
    job_name,
)
from optiserve.render.serving_config import rollout_settings, settings_fingerprint
from optiserve_operator import conditions as c
from optiserve_operator import exposure as exposing
from optiserve_operator.canary_rollout import (
    CanaryObserved,
    CanaryPass,
    plan_canary_pass,
    stable_deployment,
    wants_canary,
)
from optiserve_operator.canary_route import plan_canary_route, routes_canary
from optiserve_operator.children import Refused, rendered, serving_manifests
from optiserve_operator.failures import (
    REASON_INVALID_NAME,
    Failure,
    held,
    name_problem,
    stalled_status,
)
from optiserve_operator.observe import ANNOTATION_FAILED_ROLLOUT, DeploymentState, JobState
from optiserve_operator.retention import SpecConfigMap, config_maps_to_delete, kept_digests
from optiserve_operator.settings import POLL_SECONDS, RESYNC_SECONDS
from optiserve_operator.summary import Summary, SummaryError, parse_summary, redact
from optiserve_operator.tuning_condition import tuning_conditions, tuning_events


@dataclass(frozen=True)
class Config:
    optimizer_image: str
    service_account: str | None = None
    poll_seconds: float = POLL_SECONDS
    resync_seconds: float = RESYNC_SECONDS
    policy: Policy | None = None  # the administrator's (optiserve.policy); None: structural only
    prometheus_url: str | None = None  # where canary analysis reads Triton's metrics


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
    network_policy: bool = False  # our NetworkPolicy exists
    config_maps: tuple[SpecConfigMap, ...] = ()  # the Jobs' spec ConfigMaps
    exposure: exposing.ExposureState = field(default_factory=exposing.ExposureState)
    canary: CanaryObserved = field(default_factory=CanaryObserved)  # the canary Deployment


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    status: OptimizedModelStatus
    create: tuple[Manifest, ...] = ()  # create, or read when it exists (409)
    dry_run: tuple[Manifest, ...] = ()  # checked by the API server (SSA, dryRun=All) first
    apply: tuple[Manifest, ...] = ()  # server-side apply, field manager "optiserve"
    delete_jobs: tuple[str, ...] = ()  # still-running Jobs of a superseded digest
    delete_autoscalers: tuple[str, ...] = ()  # kinds no longer wanted (spec changed)
    delete_network_policy: bool = False  # the spec switched it off
    delete_exposure: tuple[str, ...] = ()  # HTTPRoute / Ingress no longer asked for
    delete_config_maps: tuple[str, ...] = ()  # spec ConfigMaps of superseded Jobs
    delete_canary: bool = False  # the canary Deployment (aborted, promoted, or not wanted)
    delete_canary_service: bool = False  # the canary Service (an HTTPRoute's canary backend)
    events: tuple[Event, ...] = ()
    requeue_after: float | None = 300.0  # None: only a watch event (a spec change) brings it back


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
    # Ready only once the pods run the spec's serving settings too (no annotation: older pods).
    settings = settings_fingerprint(rollout_settings(serving, candidate.tuning))
    current = dep is not None and dep.serving_config in (None, settings)
    if dep is not None and on_candidate and dep.rolled_out and current:
        return Rollout("ready", serve=candidate)
    what = f"serving settings {settings[:8]} of " if on_candidate and not current else ""
    return Rollout("rolling", serve=candidate, message=f"rolling out {what}{candidate.digest[:12]}")


def _outcome(opt: Optimization, rollout: Rollout) -> c.Outcome:
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


def transition_events(old: OptimizedModelStatus, new: OptimizedModelStatus) -> tuple[Event, ...]:
    return tuple(replace(e, message=redact(e.message)) for e in _transition_events(old, new))


def plan(obs: Observed, now: str, config: Config) -> Plan:
    model = obs.model
    spec, status, owner = model.spec, model.status, model.owner
    digest = recipe_digest(owner.name, spec)
    retry = model.annotations.get(ANNOTATION_RETRY, "")
    wanted_job = job_name(owner.name, digest, retry)
    try:
        # What the spec may ask for (optiserve.policy), before anything is rendered; checked
        # ahead of `held`, so a model refused under an older policy goes on once the operator
        # restarts with one that allows it.
        denied = violations(spec, config.policy)
        if denied:
            raise Refused(Failure(True, c.REASON_POLICY_DENIED, describe(denied)))
        if held(status, model.generation, wanted_job):
            return Plan(status=status, requeue_after=None)
        problem = name_problem(owner.name)
        if problem is not None:
            raise Refused(Failure(True, REASON_INVALID_NAME, problem))
        return _plan(obs, now, config, digest, retry, wanted_job)
    except Refused as refused:
        base = status.model_copy(update={"recipe_digest": digest, "job_name": wanted_job})
        new_status = stalled_status(base, model.generation, refused.failure, now)
        return Plan(
            status=new_status,
            events=transition_events(status, new_status),
            requeue_after=None,
        )


def _plan(
    obs: Observed, now: str, config: Config, digest: str, retry: str, wanted_job: str
) -> Plan:
    model = obs.model
    spec, status, owner = model.spec, model.status, model.owner

    opt = _optimization(obs, digest, wanted_job)
    exposed = exposing.plan_exposure(owner, spec.serving.exposure, obs.exposure)
    create: list[Manifest] = []
    dry_run: list[Manifest] = []
    events: list[Event] = []
    if opt.state == "create":
        create = [
            rendered(
                "render the spec ConfigMap",
                lambda: render_spec_config_map(owner, spec, digest, retry),
            ),
            rendered(
                "render the optimization Job",
                lambda: render_job(
                    owner,
                    spec,
                    digest,
                    image=config.optimizer_image,
                    retry=retry,
                    service_account=config.service_account,
                    keep=kept_digests(status),
                ),
            ),
        ]
        # Fail fast: what will serve the artifact is rendered now, and checked by the API
        # server (a dry run) before the Job spends an hour on an artifact nobody can serve.
        uri = artifact_uri(spec, digest, namespace=owner.namespace, name=owner.name)
        dry_run = serving_manifests(
            owner, spec, Artifact(digest=digest, uri=uri), image=config.optimizer_image
        )
        dry_run += [exposed.manifest] if exposed.manifest else []
        events.append(Event("Normal", "JobCreated", opt.message))
    delete = tuple(j.name for j in obs.jobs if j.phase == "active" and j.digest != digest)
    events += [Event("Normal", "JobSuperseded", f"deleting Job {name}") for name in delete]

    candidate = opt.artifact if opt.state == "done" else status.artifact
    canary: CanaryPass | None = None
    routed = routes_canary(owner, spec, exposed, obs.deployment, obs.exposure)  # canary_route
    if wants_canary(spec, candidate, status.last_good_artifact, status.rollout):
        assert candidate is not None and status.last_good_artifact is not None
        canary = _canary_pass(obs, config, candidate, status.last_good_artifact, now, routed)
    if canary is not None and canary.phase is not None:
        rollout = Rollout("rolling", serve=canary.stable_artifact, message=canary.decision.message)
    else:
        rollout = _rollout(obs, candidate, status.last_good_artifact, retry)
    events += rollout.events
    events += [Event(*e) for e in canary.events] if canary else []
    apply: list[Manifest] = []
    refused: Failure | None = None
    if rollout.serve is not None:
        try:
            apply = serving_manifests(owner, spec, rollout.serve, image=config.optimizer_image)
        except ArtifactLocationError as err:
            opt = Optimization("failed", reason="InvalidArtifact", message=str(err))
            rollout = Rollout("none")
        except Refused as err:
            # Keep what this pass learnt (a newly read artifact): only serving is refused.
            refused, rollout = err.failure, Rollout("none")
        else:
            if rollout.failed_marker:
                annotations = apply[0]["metadata"].setdefault("annotations", {})
                annotations[ANNOTATION_FAILED_ROLLOUT] = rollout.failed_marker
            if spec.rollout.strategy == "canary":
                apply[0] = stable_deployment(apply[0], canary, spec.serving.replicas)
            if canary is not None and canary.canary_manifest is not None:
                apply.append(canary.canary_manifest)
            apply += [exposed.manifest] if exposed.manifest else []
    route = plan_canary_route(
        owner, spec, apply, canary, routed=routed, live=obs.exposure, observed=obs.canary
    )
    autoscaling = spec.serving.autoscaling
    wanted_kind = _autoscaler_kind(autoscaling.provider) if autoscaling is not None else None
    stale = tuple(k for k in AUTOSCALER_KINDS if k in obs.autoscalers and k != wanted_kind)

    outcome = _outcome(opt, rollout)
    if canary is not None and canary.phase is not None and opt.state == "done":
        outcome = replace(
            outcome, phase=canary.phase, reason=canary.reason, message=canary.decision.message
        )
    outcome = replace(outcome, message=redact(outcome.message))
    wanted = [replace(w, message=redact(w.message)) for w in c.conditions_for(outcome)]
    wanted += tuning_conditions(candidate, status.conditions)  # serving.tuning's verdict
    last_good = status.last_good_artifact
    if rollout.state == "ready" and rollout.serve is not None:
        last_good = rollout.serve
    if canary is not None and canary.decision.action in ("finish", "done"):
        last_good = candidate  # the stable serves it, rolled out: promoted
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
        cluster_endpoint=(
            endpoint(owner.name, owner.namespace) if rollout.serve else status.cluster_endpoint
        ),
        grpc_endpoint=(
            grpc_endpoint(owner.name, owner.namespace) if rollout.serve else status.grpc_endpoint
        ),
        replicas=dep.ready_replicas if dep else 0,
        selector=selector_string(owner.name),
        serving=serving_status(spec, rollout.serve) if apply and rollout.serve else status.serving,
        rollout=canary.rollout_status if canary is not None else None,
    )
    new_status = exposing.exposed_status(
        new_status, spec.serving.exposure, obs.exposure, exposed, applied=bool(apply), now=now
    )
    if refused is not None:
        new_status = stalled_status(new_status, model.generation, refused, now)
    events += _transition_events(status, new_status)
    events += [
        Event(*e) for e in exposing.exposure_events(status.conditions, new_status.conditions)
    ]
    events += [Event(*e) for e in tuning_events(status.conditions, new_status.conditions)]
    settled = outcome.phase in ("Ready", "Failed")
    canary_wanted = canary is not None and canary.canary_manifest is not None
    poll = config.poll_seconds
    if (canary is not None and canary.phase == "Deploying") or route.pending:
        poll = min(poll, float(spec.rollout.analysis.interval_seconds))
    settled = settled and not route.pending
    return Plan(
        status=new_status,
        create=tuple(create),
        dry_run=tuple(dry_run),
        apply=route.apply,
        delete_jobs=delete,
        delete_autoscalers=stale,
        delete_network_policy=obs.network_policy and not spec.serving.network_policy.enabled,
        delete_exposure=exposed.delete,
        delete_config_maps=config_maps_to_delete(
            obs.config_maps,
            wanted_job=wanted_job,
            keep_digests=kept_digests(new_status),
            active_jobs=(j.name for j in obs.jobs if j.phase == "active"),
        ),
        events=tuple(replace(e, message=redact(e.message)) for e in events),
        requeue_after=None if refused is not None else (config.resync_seconds if settled else poll),
        delete_canary=obs.canary.deployment is not None
        and not canary_wanted
        and not route.keep_deployment,
        delete_canary_service=route.delete_service,
    )


def _canary_pass(
    obs: Observed,
    config: Config,
    candidate: Artifact,
    last_good: Artifact,
    now: str,
    exact_weights: bool,
) -> CanaryPass:
    model = obs.model
    return plan_canary_pass(
        model.owner,
        model.spec,
        candidate=candidate,
        last_good=last_good,
        state=model.status.rollout,
        stable=obs.deployment,
        observed=obs.canary,
        generation=model.generation,
        now=now,
        image=config.optimizer_image,
        exact_weights=exact_weights,
    )


def _autoscaler_kind(provider: str) -> str:
    return "ScaledObject" if provider == "keda" else "HorizontalPodAutoscaler"

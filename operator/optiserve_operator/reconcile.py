"""One reconcile pass as a pure function: what was observed in, what to do out.

Level-based, in the controller-runtime manner: ``plan`` looks only at the current state of the
OptimizedModel and its children, never at what changed, so calling it twice, or after a crash
at any line, converges to the same place. Children have deterministic names (the Job's comes
from the recipe digest), so "create" is create-or-read and a restart creates nothing twice.
"""

from __future__ import annotations

from dataclasses import replace
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
from optiserve.policy import describe, violations
from optiserve.render.deployment import (
    ArtifactLocationError,
    selector_string,
    serving_status,
)
from optiserve.render.job import artifact_uri, render_job, render_spec_config_map
from optiserve.render.kubernetes import (
    ANNOTATION_RETRY,
    Manifest,
    endpoint,
    grpc_endpoint,
    job_name,
)
from optiserve_operator import conditions as c
from optiserve_operator import exposure as exposing
from optiserve_operator.canary_rollout import (
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
from optiserve_operator.observe import ANNOTATION_FAILED_ROLLOUT
from optiserve_operator.pass_io import (
    AUTOSCALER_KINDS,
    Config,
    Event,
    ModelState,
    Observed,
    Plan,
)
from optiserve_operator.retention import config_maps_to_delete, kept_digests
from optiserve_operator.stages import (
    Optimization,
    Rollout,
    optimization_stage,
    rollout_stage,
    stage_outcome,
)
from optiserve_operator.summary import redact
from optiserve_operator.tuning_condition import tuning_conditions, tuning_events

# The pass's public face: its inputs and outputs live in pass_io, the stages in stages.py.
__all__ = [
    "AUTOSCALER_KINDS",
    "Config",
    "Event",
    "ModelState",
    "Observed",
    "Plan",
    "plan",
    "recipe_digest",
    "transition_events",
]


def recipe_digest(name: str, spec: OptimizedModelSpec) -> str:
    return spec_recipe_digest(name, spec.source, spec.optimization, spec.serving)


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

    opt = optimization_stage(obs, digest, wanted_job)
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
        canary = _canary_pass(
            obs,
            config,
            candidate,
            status.last_good_artifact,
            now,
            routed,
            candidate.digest == digest,
        )
    if canary is not None and canary.phase is not None:
        rollout = Rollout("rolling", serve=canary.stable_artifact, message=canary.decision.message)
    else:
        rollout = rollout_stage(obs, candidate, status.last_good_artifact, retry)
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

    outcome = stage_outcome(opt, rollout)
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
    candidate_current: bool,
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
        candidate_current=candidate_current,
    )


def _autoscaler_kind(provider: str) -> str:
    return "ScaledObject" if provider == "keda" else "HorizontalPodAutoscaler"

"""A canary rollout inside one reconcile pass: the planner's decision turned into manifests,
status and events. Pure (``reconcile.plan`` calls it; ``canary_reading`` does the reading).

``canary.plan_canary`` decides; this module knows which artifact each Deployment renders,
how the decision reads in the conditions (reasons below), and which Event each step makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from optiserve.api import OptimizedModelSpec
from optiserve.api.rollout import RolloutStatus
from optiserve.api.status import Artifact
from optiserve.render.canary import as_canary, as_stable, gpus_per_pod, with_latency_summaries
from optiserve.render.canary_route import with_stable_revision
from optiserve.render.deployment import render_deployment
from optiserve.render.kubernetes import Manifest, Owner
from optiserve_operator.canary import Budget, Decision, Readings, plan_canary
from optiserve_operator.children import rendered
from optiserve_operator.observe import DeploymentState

REASON_CANARY = "CanaryProgressing"
REASON_ABORTED = "CanaryAborted"
REASON_UNAVAILABLE = "CanaryAnalysisUnavailable"
REASON_BUDGET = "CanaryBudgetTooSmall"

_EVENTS: dict[str, tuple[Literal["Normal", "Warning"], str]] = {
    "start": ("Normal", "CanaryStarted"),
    "next": ("Normal", "CanaryStep"),
    "promote": ("Normal", "CanaryPromoting"),
    "finish": ("Normal", "CanaryPromoted"),
    # An abort needs none of its own: Degraded turning True (reason CanaryAborted) is the
    # Warning event reconcile emits for every condition transition.
}


@dataclass(frozen=True)
class CanaryObserved:
    """The canary Deployment and the analysis as read this pass."""

    deployment: DeploymentState | None = None
    configured: bool = False  # a Prometheus URL is set
    readings: Readings | None = None
    error: str = ""  # why the readings could not be read
    service: bool = False  # the canary Service (an HTTPRoute's canary backend) exists


@dataclass(frozen=True)
class CanaryPass:
    """What the pass does about the canary."""

    decision: Decision
    stable_artifact: Artifact  # what the stable Deployment renders
    canary_manifest: Manifest | None  # None: no canary Deployment wanted
    phase: Literal["Deploying", "Failed"] | None  # None: the ordinary rollout decides
    reason: str = ""
    events: tuple[tuple[Literal["Normal", "Warning"], str, str], ...] = field(default=())
    canary_ready: bool = False  # the canary pods run the candidate and serve

    @property
    def rollout_status(self) -> RolloutStatus | None:
        return self.decision.state


def wants_canary(
    spec: OptimizedModelSpec,
    candidate: Artifact | None,
    last_good: Artifact | None,
    state: RolloutStatus | None,
) -> bool:
    """A canary runs when the spec asks for one and a new artifact would replace a served
    one; the first artifact (nothing to compare with) and new serving settings on the same
    artifact roll as usual."""
    if spec.rollout.strategy != "canary" or candidate is None:
        return False
    if state is not None and state.canary_digest == candidate.digest:
        return True
    return last_good is not None and last_good.digest != candidate.digest


def _stable_artifact(
    candidate: Artifact, last_good: Artifact, state: RolloutStatus | None
) -> Artifact:
    if state is not None and state.stable_digest == candidate.digest:
        return candidate
    return last_good


def plan_canary_pass(
    owner: Owner,
    spec: OptimizedModelSpec,
    *,
    candidate: Artifact,
    last_good: Artifact,
    state: RolloutStatus | None,
    stable: DeploymentState | None,
    observed: CanaryObserved,
    generation: int,
    now: str,
    image: str,
    exact_weights: bool = False,
    candidate_current: bool = True,
) -> CanaryPass:
    stable_artifact = _stable_artifact(candidate, last_good, state)
    candidate_deployment = rendered(
        "render the canary Deployment",
        lambda: render_deployment(owner, spec, candidate, image=image),
    )
    budget = Budget(
        replicas=spec.serving.replicas,
        gpus_per_pod=gpus_per_pod(candidate_deployment),
        max_surge_gpus=spec.rollout.max_surge_gpus,
    )
    canary_dep = observed.deployment
    canary_ready = (
        canary_dep is not None
        and canary_dep.artifact_digest == candidate.digest
        and canary_dep.rolled_out
        and canary_dep.ready_replicas >= 1
    )
    stable_rolled = (
        stable is not None and stable.artifact_digest == candidate.digest and stable.rolled_out
    )
    decision = plan_canary(
        spec.rollout,
        state,
        stable_digest=stable_artifact.digest,
        candidate_digest=candidate.digest,
        generation=generation,
        now=now,
        budget=budget,
        canary_ready=canary_ready,
        canary_deadline_exceeded=canary_dep is not None and canary_dep.deadline_exceeded,
        stable_on_candidate_rolled_out=stable_rolled,
        canary_gone=canary_dep is None,
        readings=observed.readings,
        readings_error=observed.error,
        analysis_configured=observed.configured,
        exact_weights=exact_weights,
        candidate_current=candidate_current,
    )
    manifest = (
        as_canary(with_latency_summaries(candidate_deployment), decision.canary_replicas)
        if decision.canary_replicas > 0
        else None
    )
    served = candidate if decision.stable_on_candidate else stable_artifact
    kind = _EVENTS.get(decision.action)
    events = ((kind[0], kind[1], decision.message),) if kind else ()
    phase: Literal["Deploying", "Failed"] | None
    if decision.action == "done":
        phase, reason = None, ""
    elif decision.action in ("abort", "aborted"):
        phase, reason = "Failed", REASON_ABORTED
    elif decision.failed_check == "unavailable":
        phase, reason = "Failed", REASON_UNAVAILABLE
    elif decision.failed_check == "budget":
        phase, reason = "Failed", REASON_BUDGET
    else:
        phase, reason = "Deploying", REASON_CANARY
    return CanaryPass(decision, served, manifest, phase, reason, events, canary_ready)


def stable_deployment(deployment: Manifest, canary: CanaryPass | None, replicas: int) -> Manifest:
    """The stable Deployment under ``strategy: canary``: Triton's latency summaries always on
    (the analysis compares the canary's p99 with it), its pods labelled as the stable (what
    the model's Service selects while an HTTPRoute weighs a canary), and during a canary its
    share of the replicas, replaced in place while it takes the promoted artifact."""
    summarised = with_stable_revision(with_latency_summaries(deployment))
    if canary is None or canary.phase is None:
        return summarised
    promoting = canary.decision.state is not None and canary.decision.state.phase == "Promoting"
    return as_stable(summarised, canary.decision.stable_replicas or replicas, in_place=promoting)

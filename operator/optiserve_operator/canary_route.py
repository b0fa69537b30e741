"""A canary's weight on the model's HTTPRoute, in a reconcile pass. Pure.

``routes_canary`` says whether the route can carry the weight this pass; ``plan_canary_route``
turns the pass's serving manifests into the weighted form (``render.canary_route`` says what
the objects look like and why the model's own Service is narrowed) and says what to delete.

The order keeps every request answered: the route splits only once the canary pods serve,
so its canary backend never has no endpoints; when the canary ends, the route returns to one
backend first, and the canary Service and Deployment are deleted only once the live route no
longer sends to them (a later pass). The model's Service selects only the stable pods while
the canary's pods exist, and only once every stable pod carries the stable label (the stable
rolled out with it, or the live route already weighs a canary, which it only did after that).
"""

from __future__ import annotations

from dataclasses import dataclass

from optiserve.api import OptimizedModelSpec
from optiserve.render.canary import canary_name
from optiserve.render.canary_route import (
    STABLE,
    as_canary_service,
    stable_only,
    weighted_route,
)
from optiserve.render.kubernetes import Manifest, Owner, serving_name
from optiserve_operator.canary_rollout import CanaryObserved, CanaryPass
from optiserve_operator.exposure import ExposurePlan, ExposureState
from optiserve_operator.observe import DeploymentState

# A Service name is a DNS-1035 label: a model whose name is longer than 56 characters has no
# room for "-canary", so its canary keeps the replica-count weight.
SERVICE_NAME_MAX = 63


@dataclass(frozen=True)
class CanaryRoute:
    apply: tuple[Manifest, ...]  # the pass's manifests, the Service and route as wanted
    weight: int | None = None  # the canary's weight on the route; None: one backend
    delete_service: bool = False  # the canary Service exists and nothing sends to it
    keep_deployment: bool = False  # the live route still sends to the canary pods
    pending: bool = False  # something waits for the route to change first: look again soon


def routes_canary(
    owner: Owner,
    spec: OptimizedModelSpec,
    exposed: ExposurePlan,
    stable: DeploymentState | None,
    live: ExposureState,
) -> bool:
    """The model's HTTPRoute can carry a canary's weight: the spec asks for a canary and an
    HTTPRoute the API server serves, the canary Service's name fits, and every stable pod
    carries the stable label."""
    if spec.rollout.strategy != "canary" or exposed.manifest is None:
        return False
    if exposed.manifest["kind"] != "HTTPRoute":
        return False
    if len(canary_name(serving_name(owner.name))) > SERVICE_NAME_MAX:
        return False
    if stable is None or stable.revision != STABLE:
        return False
    return stable.rolled_out or live.canary_weight is not None


def plan_canary_route(
    owner: Owner,
    spec: OptimizedModelSpec,
    manifests: list[Manifest],
    canary: CanaryPass | None,
    *,
    routed: bool,
    live: ExposureState,
    observed: CanaryObserved,
) -> CanaryRoute:
    wanted = canary is not None and canary.canary_manifest is not None
    state = canary.decision.state if canary is not None else None
    has_route = any(m["kind"] == "HTTPRoute" for m in manifests)
    routed = routed and has_route
    service_wanted = routed and wanted
    weight: int | None = None
    if service_wanted and canary is not None and canary.canary_ready and state is not None:
        weight = spec.rollout.steps[min(state.step, len(spec.rollout.steps) - 1)].weight
    narrow = routed and (wanted or observed.deployment is not None)
    out: list[Manifest] = []
    name = serving_name(owner.name)
    canary_service: Manifest | None = None
    for manifest in manifests:
        kind = manifest["kind"]
        if kind == "Service" and manifest["metadata"]["name"] == name:
            canary_service = as_canary_service(manifest)
            manifest = stable_only(manifest) if narrow else manifest
        if kind == "HTTPRoute":
            if service_wanted and canary_service is not None:
                out.append(canary_service)  # before the route that sends to it
            if weight is not None:
                manifest = weighted_route(manifest, weight)
        out.append(manifest)
    referenced = live.canary_weight is not None
    keep = referenced and not wanted and observed.deployment is not None
    delete_service = observed.service and not service_wanted and not referenced
    waiting = observed.service and not service_wanted and referenced
    return CanaryRoute(
        apply=tuple(out),
        weight=weight,
        delete_service=delete_service,
        keep_deployment=keep,
        pending=keep or waiting,
    )

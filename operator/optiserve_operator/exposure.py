"""``spec.serving.exposure`` in a reconcile pass: read the HTTPRoute / Ingress, decide, delete.

``read_exposure`` looks (lists by the model's label, so a cluster without the Gateway API
CRDs answers 404 for the whole resource type, which a GET of one name could not tell from a
missing object); ``plan_exposure`` and ``exposure_conditions`` are pure and decide what
``reconcile.plan`` applies and reports.

A model whose spec asks for an HTTPRoute on a cluster without the Gateway API keeps serving in
the cluster: an ``Exposed=False`` condition (reason ``GatewayAPIMissing``) and one Warning
event on the transition say why, and the regular resync notices CRDs installed later. Nothing
is retried faster than any other settled model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from optiserve.api.exposure import ExposureSpec
from optiserve.api.status import Condition, OptimizedModelStatus
from optiserve.render.canary_route import canary_backend_weight
from optiserve.render.exposure import (
    EXPOSURE_KINDS,
    GATEWAY_API_VERSION,
    INGRESS_API_VERSION,
    exposure_kind,
    external_url,
    render_exposure,
)
from optiserve.render.kubernetes import LABEL_MODEL, Manifest, Owner, serving_name
from optiserve_operator import conditions as c
from optiserve_operator.kube import Kube, owned_by
from optiserve_operator.kube_transport import KubeError, Obj
from optiserve_operator.summary import redact

EXPOSED = "Exposed"
REASON_EXPOSED = "Exposed"
REASON_GATEWAY_API_MISSING = "GatewayAPIMissing"
REASON_ROUTE_NOT_ACCEPTED = "RouteNotAccepted"
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class ExposureState:
    """The model's exposure objects as the API server has them."""

    gateway_api: bool = True  # the API server serves HTTPRoute (false: the CRDs are missing)
    present: frozenset[str] = frozenset()  # kinds (HTTPRoute, Ingress) of ours that exist
    refusals: tuple[str, ...] = ()  # parents whose Accepted condition is False, and why
    canary_weight: int | None = None  # the live route's weight to the canary Service, if any


@dataclass(frozen=True)
class ExposurePlan:
    manifest: Manifest | None = None  # to apply with the serving children
    delete: tuple[str, ...] = ()  # kinds no longer wanted
    url: str | None = None  # the external URL, once the object exists or is applied
    present: bool = False  # the wanted object exists already
    problem: c.Wanted | None = None  # why the wanted object cannot be made


EventTuple = tuple[Literal["Normal", "Warning"], str, str]


def read_exposure(kube: Kube, owner: Owner) -> ExposureState:
    name = serving_name(owner.name)
    selector = {LABEL_MODEL: owner.name}
    try:
        routes = kube.list(GATEWAY_API_VERSION, "HTTPRoute", owner.namespace, selector)
        gateway_api = True
    except KubeError as err:
        if err.status != 404:  # 404 on a list: the resource type itself is not served
            raise
        routes, gateway_api = [], False
    ingresses = kube.list(INGRESS_API_VERSION, "Ingress", owner.namespace, selector)
    route = _ours(routes, name, owner.uid)
    present = {
        kind
        for kind, found in (("HTTPRoute", route), ("Ingress", _ours(ingresses, name, owner.uid)))
        if found is not None
    }
    refusals = route_refusals(route, owner.namespace) if route is not None else ()
    weight = canary_backend_weight(route, name) if route is not None else None
    return ExposureState(gateway_api, frozenset(present), refusals, weight)


def _ours(found: Sequence[Obj], name: str, uid: str) -> Obj | None:
    return next((o for o in found if o["metadata"].get("name") == name and owned_by(o, uid)), None)


def route_refusals(route: Mapping[str, Any], namespace: str) -> tuple[str, ...]:
    """Each parent (Gateway) whose controller reports ``Accepted=False`` for the route's
    current generation, with its reason and message."""
    generation = (route.get("metadata") or {}).get("generation")
    refusals = []
    for parent in (route.get("status") or {}).get("parents") or []:
        ref = parent.get("parentRef") or {}
        for cond in parent.get("conditions") or []:
            stale = generation is not None and cond.get("observedGeneration") not in (
                None,
                generation,
            )
            if cond.get("type") != "Accepted" or cond.get("status") != "False" or stale:
                continue
            gateway = f"{ref.get('namespace') or namespace}/{ref.get('name', '?')}"
            why = str(cond.get("reason") or "NotAccepted")
            text = str(cond.get("message") or "").strip()
            refusals.append(f"{gateway}: {why}" + (f": {text}" if text else ""))
    return tuple(refusals)


def plan_exposure(
    owner: Owner, exposure: ExposureSpec | None, state: ExposureState
) -> ExposurePlan:
    wanted = exposure_kind(exposure)
    delete = tuple(k for k in EXPOSURE_KINDS if k in state.present and k != wanted)
    if exposure is None:
        return ExposurePlan(delete=delete)
    if wanted == "HTTPRoute" and not state.gateway_api:
        message = (
            "spec.serving.exposure asks for an HTTPRoute, but the API server serves no "
            f"{GATEWAY_API_VERSION} HTTPRoute (install the Gateway API CRDs); the model is "
            "served in the cluster only"
        )
        problem = c.Wanted(EXPOSED, "False", REASON_GATEWAY_API_MISSING, message)
        return ExposurePlan(delete=delete, problem=problem)
    return ExposurePlan(
        manifest=render_exposure(owner, exposure),
        delete=delete,
        url=external_url(exposure),
        present=wanted in state.present,
    )


def exposure_conditions(
    conditions: Sequence[Condition],
    exposure: ExposureSpec | None,
    state: ExposureState,
    planned: ExposurePlan,
    *,
    applied: bool,
    now: str,
    generation: int,
) -> list[Condition]:
    """``conditions`` with ``Exposed`` as this pass finds it: absent without an exposure; the
    problem when there is one; once the object is applied, True or the Gateways that refuse it;
    unchanged while nothing is served yet."""
    if exposure is None:
        return [cond for cond in conditions if cond.type != EXPOSED]
    wanted = planned.problem
    if wanted is None and applied and planned.manifest is not None:
        kind, name = planned.manifest["kind"], planned.manifest["metadata"]["name"]
        if kind == "HTTPRoute" and state.refusals:
            # The Gateway controller's words, bounded and without anything like a credential.
            message = f"HTTPRoute {name} is not accepted by " + "; ".join(state.refusals)
            wanted = c.Wanted(
                EXPOSED, "False", REASON_ROUTE_NOT_ACCEPTED, redact(message, MESSAGE_LIMIT)
            )
        else:
            wanted = c.Wanted(EXPOSED, "True", REASON_EXPOSED, f"{kind} {name}: {planned.url}")
    if wanted is None:
        return list(conditions)
    return c.merge_conditions(conditions, [wanted], now, generation)


def exposed_status(
    status: OptimizedModelStatus,
    exposure: ExposureSpec | None,
    state: ExposureState,
    planned: ExposurePlan,
    *,
    applied: bool,
    now: str,
) -> OptimizedModelStatus:
    """``status`` with the ``Exposed`` condition, and the external URL as ``endpoint`` while the
    HTTPRoute or Ingress exists or is applied in this pass (``clusterEndpoint`` keeps the
    in-cluster one)."""
    conditions = exposure_conditions(
        status.conditions,
        exposure,
        state,
        planned,
        applied=applied,
        now=now,
        generation=status.observed_generation,
    )
    update: dict[str, Any] = {"conditions": conditions}
    if planned.url and (applied or planned.present):
        update["endpoint"] = planned.url
    return status.model_copy(update=update)


def exposure_events(old: Sequence[Condition], new: Sequence[Condition]) -> list[EventTuple]:
    """One event when ``Exposed`` changes status or reason: Warning when it turns False."""
    before, after = c.find(old, EXPOSED), c.find(new, EXPOSED)
    if after is None or (before and (before.status, before.reason) == (after.status, after.reason)):
        return []
    if after.status == "False":
        return [("Warning", after.reason, after.message)]
    return [("Normal", after.reason, after.message)] if after.status == "True" else []


def delete_exposure(kube: Kube, namespace: str, name: str, kind: str) -> None:
    """Delete the model's HTTPRoute or Ingress (a kind the spec no longer asks for)."""
    if kind == "HTTPRoute":
        kube.delete(GATEWAY_API_VERSION, "HTTPRoute", namespace, name)
    else:
        kube.delete(INGRESS_API_VERSION, "Ingress", namespace, name)

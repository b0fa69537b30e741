"""A canary's traffic weight carried by the model's HTTPRoute instead of replica counts. Pure.

While a canary runs behind an HTTPRoute, the route has two weighted backendRefs: the model's
Service, narrowed to the stable pods, and ``<name>-canary``, a Service of the canary pods only.
The weights are the step's percent exactly (``100 - weight`` and ``weight``), whatever the
replica counts are. When the canary ends the route returns to its one backend, the Service
selects every serving pod again and the canary Service goes.

Why narrow the model's own Service rather than add a ``<name>-stable`` one: the route's stable
backend stays the same Service before, during and after a canary (only the canary backendRef
comes and goes), the one new object shares the canary Deployment's name and life, and
in-cluster clients (``status.clusterEndpoint``) keep to the stable pods, so the canary's share
of the traffic is the step's weight of the Gateway's and nothing besides.

A Service selector cannot say "not the canary", so under ``strategy: canary`` the stable pods
carry ``optiserve.io/revision: stable`` (a pod-template label, not part of the Deployment's
immutable selector; it rolls the stable once, together with the latency summaries).
"""

from __future__ import annotations

import copy

from optiserve.render.canary import CANARY, LABEL_REVISION, canary_name
from optiserve.render.kubernetes import Manifest

STABLE = "stable"


def with_stable_revision(deployment: Manifest) -> Manifest:
    """The stable Deployment with its pods labelled ``optiserve.io/revision: stable``."""
    out = copy.deepcopy(deployment)
    template_meta = out["spec"]["template"]["metadata"]
    template_meta["labels"] = {**template_meta["labels"], LABEL_REVISION: STABLE}
    return out


def stable_only(service: Manifest) -> Manifest:
    """The model's Service selecting only the stable pods."""
    out = copy.deepcopy(service)
    out["spec"]["selector"] = {**out["spec"]["selector"], LABEL_REVISION: STABLE}
    return out


def as_canary_service(service: Manifest) -> Manifest:
    """``<name>-canary`` from the model's Service (``render_service``): the same ports and
    owner, selecting only the canary pods."""
    out = copy.deepcopy(service)
    meta = out["metadata"]
    meta["name"] = canary_name(meta["name"])
    meta["labels"] = {**meta["labels"], LABEL_REVISION: CANARY}
    out["spec"]["selector"] = {**out["spec"]["selector"], LABEL_REVISION: CANARY}
    return out


def weighted_route(route: Manifest, canary_weight: int) -> Manifest:
    """The HTTPRoute with each rule's one backend split: ``100 - canary_weight`` to the model's
    Service and ``canary_weight`` to the canary Service, on the same HTTP port."""
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"a canary weight is a percent, not {canary_weight}")
    out = copy.deepcopy(route)
    for rule in out["spec"]["rules"]:
        (stable,) = rule["backendRefs"]
        canary = {**stable, "name": canary_name(stable["name"]), "weight": canary_weight}
        rule["backendRefs"] = [{**stable, "weight": 100 - canary_weight}, canary]
    return out


def canary_backend_weight(route: Manifest, model_name: str) -> int | None:
    """The weight a live HTTPRoute gives the canary Service; None when it has no such backend."""
    wanted = canary_name(model_name)
    for rule in (route.get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            if ref.get("kind", "Service") == "Service" and ref.get("name") == wanted:
                return int(ref.get("weight", 1))
    return None

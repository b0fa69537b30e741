"""Reading a canary's state for a reconcile pass: its Deployment, and its analysis from
Prometheus while a step runs. The I/O half of ``canary_rollout``."""

from __future__ import annotations

import logging
from datetime import datetime

from optiserve.render.canary import canary_name
from optiserve_operator.canary_rollout import CanaryObserved
from optiserve_operator.kube import Kube, owned_by
from optiserve_operator.observe import deployment_state
from optiserve_operator.promql import PromQLError, Revisions, read_readings
from optiserve_operator.reconcile import ModelState

LOG = logging.getLogger("optiserve.operator")


def _elapsed(since: str, now: datetime) -> float:
    try:
        return (now - datetime.fromisoformat(since)).total_seconds()
    except ValueError:
        return 0.0


def read_canary(
    kube: Kube, model: ModelState, prometheus_url: str | None, now: datetime
) -> CanaryObserved:
    owner = model.owner
    raw = kube.get("apps/v1", "Deployment", owner.namespace, canary_name(owner.name))
    deployment = deployment_state(raw) if raw is not None and owned_by(raw, owner.uid) else None
    service = kube.get("v1", "Service", owner.namespace, canary_name(owner.name))
    has_service = service is not None and owned_by(service, owner.uid)
    configured = bool(prometheus_url)
    state = model.status.rollout
    if not prometheus_url or deployment is None or state is None or state.phase != "Canary":
        return CanaryObserved(deployment=deployment, configured=configured, service=has_service)
    # The step's window: since the canary served at this weight, at least one interval.
    window = max(
        _elapsed(state.step_started, now), float(model.spec.rollout.analysis.interval_seconds)
    )
    try:
        readings = read_readings(
            prometheus_url, Revisions(owner.namespace, owner.name), int(window)
        )
    except PromQLError as err:
        LOG.warning("%s/%s: canary analysis unreadable: %s", owner.namespace, owner.name, err)
        return CanaryObserved(
            deployment=deployment, configured=True, error=str(err), service=has_service
        )
    return CanaryObserved(
        deployment=deployment, configured=True, readings=readings, service=has_service
    )

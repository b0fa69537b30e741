"""serving.exposure in the reconcile decision: applied with the serving children, the external
URL in status.endpoint, the missing Gateway API as a condition, removal when dropped."""

from __future__ import annotations

from typing import Any

from optiserve.api.exposure import ExposureSpec
from optiserve.api.status import OptimizedModelStatus
from optiserve.render.kubernetes import job_name
from optiserve_operator.exposure import (
    EXPOSED,
    ExposureState,
    exposure_events,
    route_refusals,
)
from optiserve_operator.reconcile import Observed, Plan, plan, recipe_digest
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

ROUTE = {
    "httpRoute": {
        "parentRefs": [{"name": "public", "namespace": "gateways"}],
        "hostnames": ["digits.example.com"],
        "path": "/digits",
        "scheme": "https",
    }
}
INGRESS = {"ingress": {"host": "digits.example.com", "ingressClassName": "nginx"}}
IN_CLUSTER = "http://digits.ml.svc:8000"
NOW = "2026-01-01T00:00:00Z"


def exposed_spec(fields: dict[str, Any] | None) -> Any:
    base = spec(precision="int8")
    exposure = ExposureSpec.model_validate(fields) if fields is not None else None
    return base.model_copy(
        update={"serving": base.serving.model_copy(update={"exposure": exposure})}
    )


def ready_status() -> tuple[OptimizedModelStatus, str]:
    """A model served in the cluster without any exposure yet."""
    the_spec = spec(precision="int8")
    digest = recipe_digest(OWNER.name, the_spec)
    done = job(job_name("digits", digest), digest, "succeeded", summary_message(digest))
    status = run(model(the_spec, run(model(the_spec)).status), jobs=(done,)).status
    return run(model(the_spec, status), dep=deployment(digest)).status, digest


def observe(
    fields: dict[str, Any] | None, status: OptimizedModelStatus, digest: str, state: ExposureState
) -> Plan:
    observed = Observed(
        model=model(exposed_spec(fields), status), deployment=deployment(digest), exposure=state
    )
    return plan(observed, NOW, CONFIG)


def kinds(manifests: tuple[dict[str, Any], ...]) -> list[str]:
    return [m["kind"] for m in manifests]


def test_an_exposed_model_applies_its_route_and_shows_the_external_url() -> None:
    status, digest = ready_status()
    assert status.endpoint == IN_CLUSTER
    result = observe(ROUTE, status, digest, ExposureState())
    assert kinds(result.apply)[-1] == "HTTPRoute"
    assert result.status.endpoint == "https://digits.example.com/digits"
    assert result.status.cluster_endpoint == IN_CLUSTER
    assert result.status.grpc_endpoint == "digits.ml.svc:8001"
    assert condition(result, EXPOSED) == ("True", "Exposed")
    assert condition(result, "Ready") == ("True", "Ready")
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "Exposed")]
    # The next pass finds it there: same status, no new event (a fixed point).
    again = observe(ROUTE, result.status, digest, ExposureState(present=frozenset({"HTTPRoute"})))
    assert again.status == result.status and again.events == ()


def test_an_ingress_with_the_url_of_its_host() -> None:
    status, digest = ready_status()
    result = observe(INGRESS, status, digest, ExposureState())
    assert kinds(result.apply)[-1] == "Ingress"
    assert result.status.endpoint == "http://digits.example.com"
    assert result.delete_exposure == ()


def test_nothing_is_exposed_before_something_is_served() -> None:
    new = plan(Observed(model=model(exposed_spec(ROUTE))), NOW, CONFIG)
    assert new.apply == ()
    # ... but the API server checks it (a dry run) before the Job runs, with the rest.
    assert "HTTPRoute" in kinds(new.dry_run)
    assert new.status.endpoint is None
    assert all(c.type != EXPOSED for c in new.status.conditions)


def test_without_the_gateway_api_the_model_serves_in_the_cluster_and_says_why() -> None:
    status, digest = ready_status()
    missing = ExposureState(gateway_api=False)
    result = observe(ROUTE, status, digest, missing)
    assert "HTTPRoute" not in kinds(result.apply)
    assert kinds(result.apply)[:2] == ["Deployment", "Service"]
    assert result.status.endpoint == IN_CLUSTER
    assert condition(result, EXPOSED) == ("False", "GatewayAPIMissing")
    assert condition(result, "Ready") == ("True", "Ready")
    assert result.status.phase == "Ready"
    (event,) = result.events
    assert (event.type, event.reason) == ("Warning", "GatewayAPIMissing")
    assert "Gateway API CRDs" in event.message
    # Settled: the regular resync, no faster retry; the next pass says nothing new.
    assert result.requeue_after == CONFIG.resync_seconds
    again = observe(ROUTE, result.status, digest, missing)
    assert again.events == () and again.status == result.status
    # A dry run before the Job never sends a kind the API server does not serve.
    fresh = plan(Observed(model=model(exposed_spec(ROUTE)), exposure=missing), NOW, CONFIG)
    assert "HTTPRoute" not in kinds(fresh.dry_run)
    # The CRDs installed later: the next pass exposes the model.
    installed = observe(ROUTE, again.status, digest, ExposureState())
    assert condition(installed, EXPOSED) == ("True", "Exposed")
    assert installed.status.endpoint == "https://digits.example.com/digits"


def test_a_gateway_refusing_the_route_is_surfaced() -> None:
    status, digest = ready_status()
    refused = ExposureState(
        present=frozenset({"HTTPRoute"}),
        refusals=("gateways/public: NotAllowedByListeners: no listener allows namespace ml",),
    )
    result = observe(ROUTE, status, digest, refused)
    assert condition(result, EXPOSED) == ("False", "RouteNotAccepted")
    found = next(c for c in result.status.conditions if c.type == EXPOSED)
    assert "NotAllowedByListeners" in found.message
    assert ("Warning", "RouteNotAccepted") in [(e.type, e.reason) for e in result.events]


def test_switching_and_dropping_deletes_what_is_no_longer_asked_for() -> None:
    status, digest = ready_status()
    exposed = observe(ROUTE, status, digest, ExposureState()).status
    both = ExposureState(present=frozenset({"HTTPRoute"}))
    switched = observe(INGRESS, exposed, digest, both)
    assert switched.delete_exposure == ("HTTPRoute",)
    assert kinds(switched.apply)[-1] == "Ingress"
    dropped = observe(None, switched.status, digest, ExposureState(present=frozenset({"Ingress"})))
    assert dropped.delete_exposure == ("Ingress",)
    assert not {"HTTPRoute", "Ingress"} & set(kinds(dropped.apply))
    assert dropped.status.endpoint == IN_CLUSTER
    assert all(c.type != EXPOSED for c in dropped.status.conditions)
    # Nothing asked for and nothing there: nothing to delete.
    assert observe(None, dropped.status, digest, ExposureState()).delete_exposure == ()


def test_route_refusals_read_only_current_accepted_false_conditions() -> None:
    route = {
        "metadata": {"generation": 3},
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "public", "namespace": "gateways"},
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "False",
                            "reason": "NoMatchingParent",
                            "message": "no listener",
                            "observedGeneration": 3,
                        },
                        {"type": "ResolvedRefs", "status": "True", "observedGeneration": 3},
                    ],
                },
                {
                    "parentRef": {"name": "internal"},
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "False",
                            "reason": "Old",
                            "observedGeneration": 2,
                        },
                    ],
                },
                {
                    "parentRef": {"name": "fine"},
                    "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 3}],
                },
            ]
        },
    }
    assert route_refusals(route, "ml") == ("gateways/public: NoMatchingParent: no listener",)
    assert route_refusals({"metadata": {}}, "ml") == ()


def test_exposure_events_only_on_transitions() -> None:
    status, digest = ready_status()
    exposed = observe(ROUTE, status, digest, ExposureState()).status
    assert exposure_events(status.conditions, exposed.conditions) == [
        ("Normal", "Exposed", "HTTPRoute digits: https://digits.example.com/digits")
    ]
    assert exposure_events(exposed.conditions, exposed.conditions) == []


def test_exposure_is_not_part_of_the_recipe() -> None:
    """Exposing a model, or changing how, never re-runs its optimization."""
    plain = recipe_digest(OWNER.name, exposed_spec(None))
    assert recipe_digest(OWNER.name, exposed_spec(ROUTE)) == plain
    assert recipe_digest(OWNER.name, exposed_spec(INGRESS)) == plain

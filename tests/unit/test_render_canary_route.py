"""A canary's weight on the HTTPRoute, rendered: the weighted route and the canary Service
(golden), and which pods each backend's Service selects."""

from __future__ import annotations

from pathlib import Path

import pytest

from optiserve.api.exposure import ExposureSpec
from optiserve.render.canary import as_canary
from optiserve.render.canary_route import (
    as_canary_service,
    canary_backend_weight,
    stable_only,
    weighted_route,
    with_stable_revision,
)
from optiserve.render.deployment import render_service
from optiserve.render.exposure import render_exposure
from optiserve.render.kubernetes import HTTP_PORT, Manifest

from .golden_files import check_golden_manifest
from .test_render_canary import _deployment
from .test_render_exposure import OWNER, ROUTE
from .test_render_kubernetes import CPU_MODEL

GOLDEN = Path(__file__).parent / "golden" / "exposure"


def route() -> Manifest:
    found = render_exposure(OWNER, ExposureSpec.model_validate(ROUTE))
    assert found is not None
    return found


def selects(service: Manifest, pod_labels: dict[str, str]) -> bool:
    selector: dict[str, str] = service["spec"]["selector"]
    return selector.items() <= pod_labels.items()


def pod_labels(deployment: Manifest) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def test_weighted_route_matches_golden() -> None:
    check_golden_manifest(GOLDEN / "httproute-canary-25.yaml", weighted_route(route(), 25))


def test_canary_service_matches_golden() -> None:
    check_golden_manifest(GOLDEN / "service-canary.yaml", as_canary_service(render_service(OWNER)))


@pytest.mark.parametrize("weight", [1, 25, 50, 99, 100, 0])
def test_the_weights_are_the_percent_exactly_on_the_same_port(weight: int) -> None:
    original = route()
    weighted = weighted_route(original, weight)
    (rule,) = weighted["spec"]["rules"]
    stable, canary = rule["backendRefs"]
    assert (stable["name"], stable["weight"]) == ("digits", 100 - weight)
    assert (canary["name"], canary["weight"]) == ("digits-canary", weight)
    assert stable["port"] == canary["port"] == HTTP_PORT
    assert canary["kind"] == "Service" and canary["group"] == ""
    # Everything else of the route is as the one-backend route has it.
    (before,) = original["spec"]["rules"]
    assert {k: v for k, v in rule.items() if k != "backendRefs"} == {
        k: v for k, v in before.items() if k != "backendRefs"
    }
    assert weighted["metadata"] == original["metadata"]
    assert len(before["backendRefs"]) == 1  # the input is left alone
    assert canary_backend_weight(weighted, "digits") == weight
    assert canary_backend_weight(original, "digits") is None


@pytest.mark.parametrize("weight", [-1, 101])
def test_a_weight_outside_a_percent_is_refused(weight: int) -> None:
    with pytest.raises(ValueError, match="percent"):
        weighted_route(route(), weight)


def test_each_backend_selects_only_its_revisions_pods() -> None:
    rendered = _deployment(CPU_MODEL, OWNER)
    stable_pods = pod_labels(with_stable_revision(rendered))
    canary_pods = pod_labels(as_canary(rendered, 1))
    service = render_service(OWNER)
    narrowed = stable_only(service)
    canary_service = as_canary_service(render_service(OWNER))
    assert selects(service, stable_pods) and selects(service, canary_pods)  # no canary running
    assert selects(narrowed, stable_pods) and not selects(narrowed, canary_pods)
    assert selects(canary_service, canary_pods) and not selects(canary_service, stable_pods)
    # The label is on the pods only: the stable Deployment's selector is immutable.
    assert with_stable_revision(rendered)["spec"]["selector"] == rendered["spec"]["selector"]
    assert "optiserve.io/revision" not in pod_labels(rendered)


def test_the_canary_service_is_the_models_service_but_for_name_selector_and_label() -> None:
    service, canary = render_service(OWNER), as_canary_service(render_service(OWNER))
    assert canary["metadata"]["name"] == "digits-canary"
    assert canary["spec"]["ports"] == service["spec"]["ports"]
    assert canary["metadata"]["ownerReferences"] == service["metadata"]["ownerReferences"]
    assert canary["metadata"]["labels"] == {
        **service["metadata"]["labels"],
        "optiserve.io/revision": "canary",
    }

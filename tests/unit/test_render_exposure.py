"""serving.exposure rendered: golden HTTPRoute and Ingress, the URL, and what must hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from optiserve.api import OptimizedModel
from optiserve.api.exposure import ExposureSpec
from optiserve.render.deployment import render_service
from optiserve.render.exposure import (
    exposure_kind,
    external_url,
    render_exposure,
)
from optiserve.render.kubernetes import HTTP_PORT, Owner
from optiserve.render.manifests import render_all

from .golden_files import check_golden_manifest
from .specs import minimal

GOLDEN = Path(__file__).parent / "golden"
OWNER = Owner(name="digits", namespace="ml", uid="0b8e3a52-1111-2222-3333-444455556666")
ROUTE = {
    "httpRoute": {
        "parentRefs": [
            {"name": "public", "namespace": "gateways", "sectionName": "https"},
            {"name": "internal"},
        ],
        "hostnames": ["models.example.com", "digits.example.com"],
        "path": "/digits",
        "scheme": "https",
    }
}
INGRESS = {
    "ingress": {
        "ingressClassName": "nginx",
        "host": "digits.example.com",
        "tlsSecretName": "digits-tls",
    }
}


def exposure(fields: dict[str, Any]) -> ExposureSpec:
    return ExposureSpec.model_validate(fields)


def rendered(fields: dict[str, Any]) -> dict[str, Any]:
    manifest = render_exposure(OWNER, exposure(fields))
    assert manifest is not None
    return manifest


def test_http_route_matches_golden() -> None:
    check_golden_manifest(GOLDEN / "exposure" / "httproute.yaml", rendered(ROUTE))


def test_ingress_matches_golden() -> None:
    check_golden_manifest(GOLDEN / "exposure" / "ingress.yaml", rendered(INGRESS))


def test_nothing_without_exposure() -> None:
    assert render_exposure(OWNER, None) is None
    assert exposure_kind(None) is None


def _service_http_port() -> tuple[str, int]:
    service = render_service(OWNER)
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == "http"]
    return service["metadata"]["name"], port["port"]


def test_both_point_at_the_services_http_port() -> None:
    service_name, port = _service_http_port()
    assert port == HTTP_PORT
    (rule,) = rendered(ROUTE)["spec"]["rules"]
    (backend,) = rule["backendRefs"]
    assert (backend["kind"], backend["name"], backend["port"]) == ("Service", service_name, port)
    (path,) = rendered(INGRESS)["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": service_name, "port": {"number": port}}


def test_owned_named_and_labelled_like_the_service() -> None:
    service = render_service(OWNER)
    for fields in (ROUTE, INGRESS):
        meta = rendered(fields)["metadata"]
        assert meta["name"] == service["metadata"]["name"]
        assert meta["namespace"] == "ml"
        assert meta["labels"] == service["metadata"]["labels"]
        (ref,) = meta["ownerReferences"]
        assert (ref["uid"], ref["controller"]) == (OWNER.uid, True)


def test_a_path_prefix_is_stripped_before_triton_and_root_needs_no_rewrite() -> None:
    (rule,) = rendered(ROUTE)["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/digits"}}]
    (rewrite,) = rule["filters"]
    assert rewrite["urlRewrite"]["path"] == {
        "type": "ReplacePrefixMatch",
        "replacePrefixMatch": "/",
    }
    at_root = {"httpRoute": {**ROUTE["httpRoute"], "path": "/"}}
    (rule,) = rendered(at_root)["spec"]["rules"]
    assert "filters" not in rule
    assert rule["matches"][0]["path"]["value"] == "/"


def test_parent_refs_name_gateways_and_keep_optional_fields_out() -> None:
    parents = rendered(ROUTE)["spec"]["parentRefs"]
    assert parents[0] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "public",
        "namespace": "gateways",
        "sectionName": "https",
    }
    assert parents[1] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "internal",
    }


def test_ingress_without_class_or_tls_leaves_them_to_the_cluster() -> None:
    spec = rendered({"ingress": {"host": "digits.example.com"}})["spec"]
    assert "ingressClassName" not in spec and "tls" not in spec
    assert spec["rules"][0]["host"] == "digits.example.com"


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        (ROUTE, "https://models.example.com/digits"),
        (
            {"httpRoute": {**ROUTE["httpRoute"], "path": "/", "scheme": "http"}},
            "http://models.example.com",
        ),
        (INGRESS, "https://digits.example.com"),
        ({"ingress": {"host": "digits.example.com"}}, "http://digits.example.com"),
    ],
)
def test_external_url(fields: dict[str, Any], url: str) -> None:
    assert external_url(exposure(fields)) == url


def test_render_all_puts_the_route_after_the_service() -> None:
    obj = minimal()
    obj["spec"]["serving"] = {"exposure": ROUTE}
    model = OptimizedModel.model_validate(obj)
    kinds = [m["kind"] for m in render_all(model, digest="a" * 64, optimizer_image="opt:1")]
    assert kinds.index("Service") < kinds.index("HTTPRoute") < kinds.index("Deployment")
    assert "Ingress" not in kinds

"""The object that exposes a model outside the cluster (``spec.serving.exposure``). Pure.

An HTTPRoute (Gateway API, gateway.networking.k8s.io/v1) or an Ingress (networking.k8s.io/v1)
sending HTTP to the model's Service, named like the Service. Only HTTP: Triton's gRPC port
would need a GRPCRoute or controller-specific Ingress settings, and stays in the cluster.
"""

from __future__ import annotations

from optiserve.api.exposure import ExposureSpec, HTTPRouteExposure, IngressExposure
from optiserve.render.deployment import COMPONENT, selector_labels
from optiserve.render.kubernetes import (
    HTTP_PORT,
    Manifest,
    Owner,
    common_labels,
    metadata,
    serving_name,
)

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = f"{GATEWAY_API_GROUP}/v1"
INGRESS_API_VERSION = "networking.k8s.io/v1"
# The kinds render_exposure can return, as the operator looks for them.
EXPOSURE_KINDS = ("HTTPRoute", "Ingress")


def external_url(exposure: ExposureSpec) -> str:
    """Where clients outside the cluster call Triton's HTTP API (no trailing "/")."""
    if exposure.http_route is not None:
        route = exposure.http_route
        path = "" if route.path == "/" else route.path
        return f"{route.scheme}://{route.hostnames[0]}{path}"
    assert exposure.ingress is not None  # the API's rule: exactly one is set
    scheme = "https" if exposure.ingress.tls_secret_name else "http"
    return f"{scheme}://{exposure.ingress.host}"


def exposure_kind(exposure: ExposureSpec | None) -> str | None:
    if exposure is None:
        return None
    return "HTTPRoute" if exposure.http_route is not None else "Ingress"


def render_exposure(owner: Owner, exposure: ExposureSpec | None) -> Manifest | None:
    """The HTTPRoute or Ingress the spec asks for; None when it asks for neither."""
    if exposure is None:
        return None
    if exposure.http_route is not None:
        return render_http_route(owner, exposure.http_route)
    assert exposure.ingress is not None
    return render_ingress(owner, exposure.ingress)


def _labels(owner: Owner) -> dict[str, str]:
    return {**common_labels(owner.name, COMPONENT), **selector_labels(owner.name)}


def render_http_route(owner: Owner, route: HTTPRouteExposure) -> Manifest:
    """Requests for ``hostnames`` under ``path`` to the Service's HTTP port.

    A path other than "/" is stripped on the way (URLRewrite ReplacePrefixMatch, in Gateway
    API's standard channel), because Triton serves its API at /v2 and knows nothing of the
    prefix.
    """
    parents = [
        {"group": GATEWAY_API_GROUP, "kind": "Gateway", **ref.to_wire()}
        for ref in route.parent_refs
    ]
    rule: Manifest = {
        "matches": [{"path": {"type": "PathPrefix", "value": route.path}}],
        "backendRefs": [
            {
                "group": "",
                "kind": "Service",
                "name": serving_name(owner.name),
                "port": HTTP_PORT,
                "weight": 1,
            }
        ],
    }
    if route.path != "/":
        rule["filters"] = [
            {
                "type": "URLRewrite",
                "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
            }
        ]
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": metadata(serving_name(owner.name), owner, _labels(owner)),
        "spec": {
            "parentRefs": parents,
            "hostnames": list(route.hostnames),
            "rules": [rule],
        },
    }


def render_ingress(owner: Owner, ingress: IngressExposure) -> Manifest:
    """Every path of ``host`` to the Service's HTTP port, with TLS when a Secret is named.

    No path prefix: Ingress has no portable way to strip one before Triton sees the request.
    """
    spec: Manifest = {
        "rules": [
            {
                "host": ingress.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {
                                    "name": serving_name(owner.name),
                                    "port": {"number": HTTP_PORT},
                                }
                            },
                        }
                    ]
                },
            }
        ],
    }
    if ingress.ingress_class_name:
        spec["ingressClassName"] = ingress.ingress_class_name
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return {
        "apiVersion": INGRESS_API_VERSION,
        "kind": "Ingress",
        "metadata": metadata(serving_name(owner.name), owner, _labels(owner)),
        "spec": spec,
    }

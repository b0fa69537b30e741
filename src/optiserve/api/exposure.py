"""``OptimizedModel.spec.serving.exposure``: reaching a model from outside the cluster.

Either a Gateway API ``HTTPRoute`` attached to a Gateway someone else runs, or a
``networking.k8s.io/v1`` Ingress; both send HTTP (Triton's KServe v2 REST API) to the model's
Service. Hosts must be concrete names (no wildcard, no IP address), because the operator
reports the external URL in ``status.endpoint`` and a URL needs one host.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from optiserve.api import formats
from optiserve.api.base import ApiModel
from optiserve.api.rules import CelRule

HOSTNAME_MAX = 253
# A DNS-1123 subdomain as Gateway API and Ingress hosts take it, without their wildcard form.
Hostname = Annotated[str, Field(max_length=HOSTNAME_MAX, pattern=formats.DNS1123_SUBDOMAIN)]
# Both APIs refuse an IP address as a host; the subdomain pattern alone would let one through.
IPV4_LIKE = r"^[0-9]+([.][0-9]+)*$"
# A path prefix without ".", ".." or empty segments and without a trailing "/" (except "/"):
# what Gateway API's PathPrefix accepts, in a form whose external URL reads unambiguously.
PATH_PREFIX = r"^/([A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*)?$"
PATH_PREFIX_MAX = 256


def _not_an_ip_rule(field: str, cel_var: str, get: str) -> CelRule:
    return CelRule(
        cel=f"!{cel_var}.matches('{IPV4_LIKE}')",
        message="a host is a DNS name such as models.example.com, not an IP address",
        field=field,
        check=lambda m: not formats.matches(IPV4_LIKE, getattr(m, get)),
    )


class ParentReference(ApiModel):
    """A Gateway the route attaches to (a Gateway API parentRef)."""

    name: str = Field(
        max_length=253, pattern=formats.DNS1123_SUBDOMAIN, description="The Gateway's name."
    )
    namespace: str | None = Field(
        None,
        max_length=63,
        pattern=formats.DNS1123_LABEL,
        description="The Gateway's namespace; unset: the model's (a Gateway elsewhere must "
        "allow routes from the model's namespace in its listeners' allowedRoutes).",
    )
    section_name: str | None = Field(
        None,
        max_length=253,
        pattern=formats.DNS1123_SUBDOMAIN,
        description="One listener of the Gateway; unset: every listener that accepts the route.",
    )


class HTTPRouteExposure(ApiModel):
    """A Gateway API HTTPRoute (gateway.networking.k8s.io/v1) to the model's Service."""

    parent_refs: list[ParentReference] = Field(
        min_length=1, max_length=32, description="The Gateways (and listeners) to attach to."
    )
    hostnames: list[Hostname] = Field(
        min_length=1,
        max_length=16,
        description="Host names the route answers; the first one is in status.endpoint.",
    )
    path: str = Field(
        "/",
        max_length=PATH_PREFIX_MAX,
        pattern=PATH_PREFIX,
        description="Path prefix, e.g. /digits; removed before the request reaches Triton "
        "(a URLRewrite filter), so /digits/v2/models/... arrives as /v2/models/....",
    )
    scheme: Literal["http", "https"] = Field(
        "http",
        description="What clients use on the Gateway's listener: only shapes status.endpoint "
        "(the route cannot tell whether the listener terminates TLS).",
    )

    rules = (
        CelRule(
            cel=f"self.hostnames.all(h, !h.matches('{IPV4_LIKE}'))",
            message="a host is a DNS name such as models.example.com, not an IP address",
            field=".hostnames",
            check=lambda r: not any(formats.matches(IPV4_LIKE, h) for h in r.hostnames),
        ),
    )


class IngressExposure(ApiModel):
    """A networking.k8s.io/v1 Ingress for one host, every path to the model's Service."""

    ingress_class_name: str | None = Field(
        None,
        max_length=253,
        pattern=formats.DNS1123_SUBDOMAIN,
        description="The IngressClass; unset: the cluster's default class.",
    )
    host: Hostname = Field(description="The host name clients call.")
    tls_secret_name: str | None = Field(
        None,
        max_length=253,
        pattern=formats.DNS1123_SUBDOMAIN,
        description="A kubernetes.io/tls Secret of the model's namespace for host; set: "
        "status.endpoint is https://.",
    )

    rules = (_not_an_ip_rule(".host", "self.host", "host"),)


class ExposureSpec(ApiModel):
    """Expose Triton's HTTP API outside the cluster: an HTTPRoute or an Ingress, not both.

    gRPC is not exposed (it needs a GRPCRoute or controller-specific Ingress settings); it stays
    in the cluster at status.grpcEndpoint."""

    http_route: HTTPRouteExposure | None = Field(
        None, description="Attach the model to a Gateway (needs the Gateway API CRDs)."
    )
    ingress: IngressExposure | None = Field(None, description="Route a host through an Ingress.")

    rules = (
        CelRule(
            cel="has(self.httpRoute) != has(self.ingress)",
            message="set exactly one of httpRoute and ingress",
            field=".httpRoute",
            check=lambda e: (e.http_route is None) != (e.ingress is None),
        ),
    )

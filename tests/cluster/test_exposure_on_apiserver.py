"""The rendered HTTPRoute and Ingress on the real API server (kube-apiserver 1.34 with the
Gateway API standard-channel CRDs at the version in hack/gateway-api/versions.env).

Server-side applied as the operator applies them (field manager optiserve), then read back:
the API server must store exactly the spec we render, so that a later apply changes nothing and
no default the server fills in fights with the operator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from optiserve.api.exposure import ExposureSpec
from optiserve.render.exposure import render_exposure
from optiserve.render.kubernetes import FIELD_MANAGER, Owner
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.gateway_api import (
    VERSION,
    GatewayApiUnavailable,
    install_gateway_api,
)

pytestmark = pytest.mark.cluster
OWNER_UID = "0b8e3a52-1111-2222-3333-444455556666"

ROUTES: dict[str, dict[str, Any]] = {
    "route-prefix": {
        "httpRoute": {
            "parentRefs": [
                {"name": "public", "namespace": "gateways", "sectionName": "https"},
                {"name": "internal"},
            ],
            "hostnames": ["models.example.com", "digits.example.com"],
            "path": "/digits",
            "scheme": "https",
        }
    },
    "route-root": {
        "httpRoute": {"parentRefs": [{"name": "public"}], "hostnames": ["digits.example.com"]}
    },
    "ingress-tls": {
        "ingress": {
            "ingressClassName": "nginx",
            "host": "digits.example.com",
            "tlsSecretName": "digits-tls",
        }
    },
    "ingress-plain": {"ingress": {"host": "digits.example.com"}},
}


@pytest.fixture(scope="module")
def gateway_api(cluster: LocalCluster) -> Iterator[None]:
    try:
        install_gateway_api(cluster)
    except GatewayApiUnavailable as err:
        pytest.skip(str(err))
    yield


def server_side_apply(
    cluster: LocalCluster, manifest: dict[str, Any], *, dry_run: bool = False
) -> Any:
    args = ["apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-o", "json", "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    result = cluster.kubectl(*args, input=yaml.safe_dump(manifest))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_pinned_gateway_api_is_installed(cluster: LocalCluster, gateway_api: None) -> None:
    crd = json.loads(
        cluster.kubectl(
            "get", "crd", "httproutes.gateway.networking.k8s.io", "-o", "json", check=True
        ).stdout
    )
    annotations = crd["metadata"]["annotations"]
    assert annotations["gateway.networking.k8s.io/bundle-version"] == VERSION
    assert annotations["gateway.networking.k8s.io/channel"] == "standard"


@pytest.mark.parametrize("case", sorted(ROUTES))
def test_the_api_server_stores_exactly_what_is_rendered(
    cluster: LocalCluster, cluster_namespace: str, gateway_api: None, case: str
) -> None:
    owner = Owner(name="digits", namespace=cluster_namespace, uid=OWNER_UID)
    manifest = render_exposure(owner, ExposureSpec.model_validate(ROUTES[case]))
    assert manifest is not None

    checked = server_side_apply(cluster, manifest, dry_run=True)
    assert checked["spec"] == manifest["spec"]
    assert checked["metadata"]["ownerReferences"] == manifest["metadata"]["ownerReferences"]
    # Stored for real without the owner reference: the garbage collector would remove an
    # object whose owner does not exist.
    del manifest["metadata"]["ownerReferences"]
    stored = server_side_apply(cluster, manifest)
    assert stored["spec"] == manifest["spec"], "the API server defaulted or changed a field"
    assert stored["metadata"]["labels"] == manifest["metadata"]["labels"]
    # Applying the same object again changes nothing (no defaulting tug of war).
    again = server_side_apply(cluster, manifest)
    assert again["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]


def test_the_check_has_teeth(
    cluster: LocalCluster, cluster_namespace: str, gateway_api: None
) -> None:
    """The Gateway API CRD's own rules are enforced: a backend port by name is refused."""
    owner = Owner(name="digits", namespace=cluster_namespace, uid=OWNER_UID)
    manifest = render_exposure(owner, ExposureSpec.model_validate(ROUTES["route-prefix"]))
    assert manifest is not None
    manifest["spec"]["rules"][0]["backendRefs"][0]["port"] = "http"
    args = ["apply", "--server-side", "--dry-run=server", "-f", "-"]
    result = cluster.kubectl(*args, input=yaml.safe_dump(manifest))
    assert result.returncode != 0
    assert "port" in result.stderr

"""pytest plugin: the session-scoped `cluster` fixture (a LocalCluster with the pod runner
running), a function-scoped `cluster_namespace` (a fresh namespace, deleted afterwards), and a
module-scoped `routed_cluster`: a second cluster whose pods have addresses of their own on lo
and whose Services are routed by the real kube-proxy (pod_network.py, kube_proxy.py).

Register with `pytest_plugins = ["optiserve_testing.fixtures"]`; mark tests `@pytest.mark.cluster`.
When the binaries are not built yet the fixture builds them (hack/cluster/build.sh; slow once),
unless OPTISERVE_CLUSTER_BUILD=0, and skips with the reason when that is impossible.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from optiserve_testing.binaries import BinariesUnavailable, control_plane_binaries
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.cluster_spec import ClusterOptions
from optiserve_testing.kube_proxy import KubeProxyUnavailable
from optiserve_testing.pod_network import DEFAULT_LO_POD_CIDR, PodNetworkUnavailable


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    try:
        binaries = control_plane_binaries()
    except BinariesUnavailable as err:
        pytest.skip(f"local Kubernetes control plane unavailable: {err}")
    local = LocalCluster(binaries)
    local.start()
    try:
        local.start_pod_runner()
        yield local
    finally:
        local.stop()


@pytest.fixture
def cluster_namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name, check=True)
    cluster.wait_for_default_service_account(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def routed_cluster() -> Iterator[LocalCluster]:
    """A cluster of its own for one test module: pod addresses on lo, so the EndpointSlice
    controller publishes them, and kube-proxy routing ClusterIPs to them. Where this machine
    cannot (no CAP_NET_ADMIN, no kube-proxy binary) it skips saying why, which
    OPTISERVE_REQUIRE_TIERS=1 turns into a failure (tests/conftest.py)."""
    try:
        binaries = control_plane_binaries(extra=("kube-proxy",))
    except BinariesUnavailable as err:
        pytest.skip(f"local Kubernetes control plane with kube-proxy unavailable: {err}")
    options = ClusterOptions(pod_cidr_on_lo=DEFAULT_LO_POD_CIDR, kube_proxy=True)
    local = LocalCluster(binaries, options)
    try:
        local.start()
    except (PodNetworkUnavailable, KubeProxyUnavailable) as err:
        pytest.skip(f"pods cannot be routed to on this machine: {err}")
    try:
        local.start_pod_runner()
        yield local
    finally:
        local.stop()

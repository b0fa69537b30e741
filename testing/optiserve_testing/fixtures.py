"""pytest plugin: the session-scoped `cluster` fixture (a LocalCluster with the pod runner
running) and a function-scoped `cluster_namespace` (a fresh namespace, deleted afterwards).

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

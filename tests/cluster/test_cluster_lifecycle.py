"""Starting from the cached binaries and stopping leaves nothing behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from optiserve_testing.binaries import BUILD_SCRIPT
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.cluster_spec import ClusterOptions, FakeNode

pytestmark = pytest.mark.cluster


def test_build_script_is_a_no_op_with_a_warm_cache(cluster: LocalCluster) -> None:
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "kube-apiserver", "etcd", "kwok"],
        env={**os.environ, "OPTISERVE_BIN_CACHE": str(cluster.binaries.root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "all cached" in result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_second_cluster_starts_from_fresh_state_and_stops_completely(
    cluster: LocalCluster,
) -> None:
    second = LocalCluster(cluster.binaries, ClusterOptions(nodes=(FakeNode("only-node"),)))
    with second:
        assert second.server != cluster.server
        assert second.kubectl("get", "--raw", "/readyz", check=True).stdout.strip() == "ok"
        nodes = second.kubectl("get", "nodes", "-o", "name", check=True).stdout.split()
        assert nodes == ["node/only-node"]
        pids = [process.pid for process in second._processes]
        assert len(pids) == 5
    assert not any(_alive(pid) for pid in pids)
    assert not second.state_dir.exists()
    # The session cluster is untouched by the second one going away.
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"

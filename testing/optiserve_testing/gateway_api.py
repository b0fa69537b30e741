"""The Gateway API's standard-channel CRDs on the local cluster, at the pinned version.

hack/gateway-api/fetch.sh fetches them once from the Go module proxy (version in
hack/gateway-api/versions.env) and caches them under ~/.cache/optiserve; .ci/run calls it
first, so tests only read the cache. Installing and removing them is per test module: the
cluster is shared, and "no Gateway API" is a case worth testing too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from optiserve_testing.binaries import REPO_ROOT, read_versions
from optiserve_testing.cluster import LocalCluster, wait_established
from optiserve_testing.waiting import wait_until

FETCH_SCRIPT = REPO_ROOT / "hack" / "gateway-api" / "fetch.sh"
VERSION = read_versions(REPO_ROOT / "hack" / "gateway-api" / "versions.env")["GATEWAY_API_VERSION"]
GROUP = "gateway.networking.k8s.io"
# The kinds optiserve uses or points at, of the standard channel's five.
NEEDED_CRDS = (f"httproutes.{GROUP}", f"gateways.{GROUP}", f"gatewayclasses.{GROUP}")


class GatewayApiUnavailable(RuntimeError):
    """The CRDs are not cached and could not be fetched (no Go toolchain, offline)."""


def gateway_api_crds() -> Path:
    """The cached multi-document CRD file, fetched first when it is not there."""
    result = subprocess.run(
        ["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        raise GatewayApiUnavailable(
            f"hack/gateway-api/fetch.sh failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}"
        )
    return Path(lines[-1])


def served(cluster: LocalCluster) -> bool:
    """The API server serves HTTPRoute (what the operator's read finds out)."""
    found = cluster.kubectl("get", "--raw", f"/apis/{GROUP}/v1")
    return found.returncode == 0 and '"httproutes"' in found.stdout


def install_gateway_api(cluster: LocalCluster) -> None:
    crds = gateway_api_crds()
    cluster.kubectl("apply", "--server-side", "-f", str(crds), check=True)
    for crd in NEEDED_CRDS:
        wait_established(cluster, crd)
    wait_until("HTTPRoute served", lambda: served(cluster), timeout_s=60, every_s=0.5)


def uninstall_gateway_api(cluster: LocalCluster) -> None:
    """Remove every Gateway API CRD (and so every object of them) and wait until none is
    served."""
    names = cluster.kubectl("get", "crd", "-o", "name", check=True).stdout.split()
    ours = [n for n in names if n.endswith(f".{GROUP}")]
    if ours:
        cluster.kubectl("delete", *ours, "--wait=true", "--timeout=120s", check=True)
    wait_until("HTTPRoute no longer served", lambda: not served(cluster), timeout_s=60)

"""``make cluster``: the test control plane for a person, not only for pytest.

    python -m optiserve_testing [--namespace demo] [--operator] [--gateway-api] [--state-dir DIR]

Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok from the pinned
binaries (hack/cluster/build.sh builds them once), the pod runner that really runs Job pods and
Triton pods here, and installs the OptimizedModel CRD. It prints the kubeconfig to export, then
waits; Ctrl-C (or SIGTERM) stops everything and removes the state (unless --state-dir is given).

``--namespace`` makes a namespace with the claims the examples use (``models`` and
``model-store``) and prints the folders behind them: put a model there (``make demo`` builds the
example models) and ``kubectl apply`` an OptimizedModel. ``--operator`` also runs the operator
against this cluster, its log on this terminal. ``--gateway-api`` installs the Gateway API's
standard CRDs at the pinned version (hack/gateway-api), for ``serving.exposure.httpRoute``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path

from optiserve_testing.binaries import BinariesUnavailable, control_plane_binaries
from optiserve_testing.cluster import LocalCluster, install_crd
from optiserve_testing.cluster_spec import ClusterOptions
from optiserve_testing.gateway_api import GatewayApiUnavailable, install_gateway_api
from optiserve_testing.processes import pods_run_this_checkout
from optiserve_testing.volume_binder import claim_manifest

REPO = Path(__file__).resolve().parents[2]
CLAIMS = ("models", "model-store")


def prepare_namespace(cluster: LocalCluster, namespace: str) -> list[Path]:
    """The namespace with the example claims; returns the folders behind the claims."""
    cluster.kubectl("create", "namespace", namespace, check=True)
    cluster.wait_for_default_service_account(namespace)
    cluster.apply([claim_manifest(claim) for claim in CLAIMS], namespace=namespace)
    folders = [cluster.pvc_root / namespace / claim for claim in CLAIMS]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def start_operator(cluster: LocalCluster) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "optiserve_operator",
            "--standalone",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--log-format",
            "full",
            "--optimizer-image",
            "optiserve-optimizer:local",
        ],
        cwd=REPO,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optiserve_testing",
        description="Run the local Kubernetes control plane (and optionally the operator) "
        "until Ctrl-C.",
    )
    parser.add_argument("--namespace", help="create it with the claims 'models', 'model-store'")
    parser.add_argument("--operator", action="store_true", help="also run the operator")
    parser.add_argument(
        "--gateway-api", action="store_true", help="install the Gateway API CRDs (HTTPRoute)"
    )
    parser.add_argument(
        "--state-dir", type=Path, help="keep the cluster's files here (default: a temp folder)"
    )
    args = parser.parse_args(argv)
    try:
        binaries = control_plane_binaries()
    except BinariesUnavailable as err:
        print(f"cannot start the local cluster: {err}", file=sys.stderr)
        return 2
    if args.state_dir:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    options = ClusterOptions(keep_state=args.state_dir is not None)
    pods_run_this_checkout(REPO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LocalCluster(binaries, options, state_dir=args.state_dir) as cluster:
        cluster.start_pod_runner()
        install_crd(cluster)
        if args.gateway_api:
            try:
                install_gateway_api(cluster)
            except GatewayApiUnavailable as err:
                print(f"Gateway API CRDs not installed: {err}", file=sys.stderr)
        print(f"\nlocal cluster up: {cluster.server}")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        print("  kubectl get nodes    # kwok nodes, GPU ones among them")
        if args.namespace:
            for folder in prepare_namespace(cluster, args.namespace):
                print(f"  claim {folder.name!r} in namespace {args.namespace!r} is {folder}")
        operator = start_operator(cluster) if args.operator else None
        print("Ctrl-C stops everything.", flush=True)
        try:
            stop.wait()
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(timeout=30)
    print("local cluster stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

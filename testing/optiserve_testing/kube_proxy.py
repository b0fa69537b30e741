"""The real kube-proxy for a local test cluster, so a Service's ClusterIP reaches its pods.

Opt-in per cluster (``ClusterOptions.kube_proxy``, which needs ``pod_cidr_on_lo``: only then do
the Service's EndpointSlices hold the pods' addresses). kube-proxy runs as the node ``cpu-0``
with the bootstrap identity ``system:kube-proxy`` (bound to ``system:node-proxier``), in
nftables mode: it watches Services and EndpointSlices and programs the table ``ip kube-proxy``
of this machine's network namespace, whose ``output`` hook also catches connections this
machine opens itself. A connection to a ClusterIP is DNATed to one ready endpoint chosen at
random (``numgen random mod N``), per connection, exactly as on a node.

kube-proxy leaves the host's sysctls alone here (conntrack sizes and timeouts 0: "do not
set"), binds its health and metrics servers to loopback ports of its own, and its rules are
removed when the cluster stops (``kube-proxy --cleanup``). Its table has one name per network
namespace, so one cluster at a time per machine may run it: a lock file makes a second wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from optiserve.serve.probe import http_ok, poll_until
from optiserve_testing.processes import ManagedProcess, free_ports

NODE = "cpu-0"
USER = "system:kube-proxy"
LOCK_FILE = Path(tempfile.gettempdir()) / "optiserve-kube-proxy.lock"


class KubeProxyUnavailable(RuntimeError):
    """kube-proxy is not built, another cluster here holds it, or it did not become healthy."""


def kube_proxy_args(
    kubeconfig: Path, cluster_cidr: str, healthz_port: int, metrics_port: int
) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE}",
        "--proxy-mode=nftables",
        # Connections from outside the pod range (this machine's own) are masqueraded.
        f"--cluster-cidr={cluster_cidr}",
        f"--healthz-bind-address=127.0.0.1:{healthz_port}",
        f"--metrics-bind-address=127.0.0.1:{metrics_port}",
        # NodePorts only on loopback, which nftables mode does not serve (it logs so, as an
        # error): none of the machine's addresses opens one ("primary" would mean every
        # address, the node's IP being loopback).
        "--nodeport-addresses=127.0.0.1/32",
        "--oom-score-adj=0",  # an ordinary process here, not one the OOM killer must spare
        # 0: leave the machine's conntrack table size and timeouts as they are.
        "--conntrack-max-per-core=0",
        "--conntrack-min=0",
        "--conntrack-tcp-timeout-established=0s",
        "--conntrack-tcp-timeout-close-wait=0s",
        "--conntrack-udp-timeout=0s",
        "--conntrack-udp-timeout-stream=0s",
        # Resync often: a test waits on the rules for a new Service or endpoint.
        "--config-sync-period=1m",
        "--v=2",
    ]


class KubeProxy:
    def __init__(self, binary: Path, kubeconfig: Path, cluster_cidr: str, log: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.cluster_cidr = cluster_cidr
        self.log = log
        self.process: ManagedProcess | None = None
        self._lock: IO[bytes] | None = None

    def start(self, timeout_s: float) -> None:
        if not self.binary.is_file():
            raise KubeProxyUnavailable(
                f"{self.binary} is not built: run hack/cluster/build.sh kube-proxy"
            )
        self._take_lock(timeout_s)
        healthz, metrics = free_ports(2)
        self.process = ManagedProcess(
            "kube-proxy",
            [
                str(self.binary),
                *kube_proxy_args(self.kubeconfig, self.cluster_cidr, healthz, metrics),
            ],
            self.log,
        )
        url = f"http://127.0.0.1:{healthz}/healthz"
        process = self.process
        if not poll_until(lambda: process.exited() or http_ok(url), timeout_s, 0.25) or (
            process.exited()
        ):
            tail = process.log_tail()
            self.stop()
            raise KubeProxyUnavailable(f"kube-proxy did not become healthy; its log ends:\n{tail}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
            # Its nftables table (and any iptables/ipvs leftovers) go with it.
            subprocess.run(
                [str(self.binary), "--cleanup", "--v=0"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None

    def _take_lock(self, timeout_s: float) -> None:
        handle = LOCK_FILE.open("ab")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock = handle
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise KubeProxyUnavailable(
                        f"another local cluster on this machine runs kube-proxy ({LOCK_FILE})"
                    ) from None
                time.sleep(1)
            except OSError:
                with contextlib.suppress(OSError):
                    handle.close()
                raise

"""Where the pods the runner runs listen: a 127.x address each (the default), or, per cluster,
an address of their own from a test-only range added to ``lo`` while they run.

127.x addresses need no set-up, but the API server refuses loopback addresses in
EndpointSlices, so a Service's slices stay empty and nothing can route to its pods. A cluster
started with ``ClusterOptions.pod_cidr_on_lo`` gives each pod the next free address of that
range instead (``ip addr add A/32 dev lo``, removed when the pod stops): the EndpointSlice
controller publishes them, and kube-proxy (kube_proxy.py) sends a Service's traffic to them.
This needs root with CAP_NET_ADMIN; ``AddressesOnLo.preflight`` says so clearly when absent.

Which address a pod gets is derived from its uid, and the kernel decides who has it: an
address that ``ip addr add`` finds taken (another pod, another test run on the machine) is
skipped for the next one. The addresses carry the label ``lo:optiserve`` so that leftovers of
a killed run can be found (``ip -4 addr show label lo:optiserve``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Protocol

from optiserve_testing import pod_spec

# Test-only: outside the service range (10.96.0.0/16) and kwok's pod range (10.244.0.0/16).
DEFAULT_LO_POD_CIDR = "10.250.0.0/16"
ADDRESS_LABEL = "lo:optiserve"
PROBE_UID = "optiserve-pod-network-preflight"


class PodNetworkUnavailable(RuntimeError):
    """Pod addresses cannot be added to lo here (no `ip` command, or no CAP_NET_ADMIN)."""


class PodAddresses(Protocol):
    def claim(self, uid: str) -> str:
        """The pod's address, ready to bind (the same one until released)."""
        ...

    def release(self, uid: str) -> None:
        """The pod stopped: its address goes (idempotent)."""
        ...

    def release_all(self) -> None: ...


class LoopbackAddresses:
    """The default: pod_spec.pod_ip, a 127.x address from the uid; nothing to add or remove."""

    def claim(self, uid: str) -> str:
        return pod_spec.pod_ip(uid)

    def release(self, uid: str) -> None:
        return None

    def release_all(self) -> None:
        return None


def candidate_addresses(uid: str, cidr: str) -> Iterator[str]:
    """Every host address of ``cidr``, starting at the one the uid hashes to."""
    network = ipaddress.IPv4Network(cidr)
    first, count = int(network.network_address) + 1, max(1, network.num_addresses - 2)
    start = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big") % count
    for offset in range(count):
        yield str(ipaddress.IPv4Address(first + (start + offset) % count))


class AddressesOnLo:
    """Addresses from ``cidr`` added to lo, one per running pod (see the module docstring)."""

    def __init__(self, cidr: str = DEFAULT_LO_POD_CIDR) -> None:
        self.cidr = cidr
        self._ip = shutil.which("ip") or "/usr/sbin/ip"
        self._lock = threading.Lock()
        self._claimed: dict[str, str] = {}  # uid -> address

    def preflight(self) -> None:
        """Add and remove one address, or PodNetworkUnavailable saying what is missing."""
        self.claim(PROBE_UID)
        self.release(PROBE_UID)

    def claim(self, uid: str) -> str:
        with self._lock:
            if uid in self._claimed:
                return self._claimed[uid]
            for address in candidate_addresses(uid, self.cidr):
                added = self._run("add", address)
                if added.returncode == 0:
                    self._claimed[uid] = address
                    return address
                if "File exists" not in added.stderr:
                    raise PodNetworkUnavailable(
                        f"cannot add pod address {address}/32 to lo ({added.stderr.strip()}); "
                        "pods with addresses of their own need root with CAP_NET_ADMIN "
                        "(ClusterOptions.pod_cidr_on_lo)"
                    )
        raise PodNetworkUnavailable(f"every address of {self.cidr} is taken on lo")

    def release(self, uid: str) -> None:
        with self._lock:
            address = self._claimed.pop(uid, None)
        if address is not None:
            self._run("del", address)

    def release_all(self) -> None:
        with self._lock:
            uids = list(self._claimed)
        for uid in uids:
            self.release(uid)

    def _run(self, verb: str, address: str) -> subprocess.CompletedProcess[str]:
        argv = [self._ip, "-4", "addr", verb, f"{address}/32", "dev", "lo"]
        if verb == "add":
            argv += ["label", ADDRESS_LABEL]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError as err:
            raise PodNetworkUnavailable(f"cannot run {self._ip}: {err}") from err

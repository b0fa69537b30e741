"""What a local test cluster consists of: its fake nodes, options and kubeconfig files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from optiserve_testing import pki

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class FakeNode:
    """A node that kwok keeps Ready; `gpus` > 0 adds nvidia.com/gpu capacity."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    gpus: int = 0
    cpu: str = "32"
    memory: str = "256Gi"
    # What a kubelet reports for its root file system; pods asking for scratch space (the
    # optimizer Job, Triton's /tmp) cannot be scheduled on a node that reports none.
    ephemeral_storage: str = "500Gi"
    pods: str = "110"  # a kubelet's default; the scale benchmark asks for more

    def manifest(self) -> dict[str, object]:
        capacity = {
            "cpu": self.cpu,
            "memory": self.memory,
            "ephemeral-storage": self.ephemeral_storage,
            "pods": self.pods,
        }
        if self.gpus:
            capacity[GPU_RESOURCE] = str(self.gpus)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    **self.labels,
                },
            },
            # kwok's node-initialize stage keeps the capacity given here.
            "status": {"capacity": capacity, "allocatable": capacity},
        }


DEFAULT_NODES = (
    FakeNode("gpu-a100", {GPU_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB"}, gpus=4),
    FakeNode("gpu-l4", {GPU_PRODUCT_LABEL: "NVIDIA-L4"}, gpus=4),
    FakeNode("cpu-0"),
)


@dataclass(frozen=True)
class ClusterOptions:
    nodes: tuple[FakeNode, ...] = DEFAULT_NODES
    restricted_user: str = "restricted-user"
    # The restricted user may only `view` (the built-in ClusterRole) in this namespace.
    restricted_namespace: str = "restricted"
    startup_timeout_s: float = 180.0
    keep_state: bool = bool(os.environ.get("OPTISERVE_KEEP_CLUSTER_STATE"))
    # Extra flags, e.g. an audit policy for the API server or a higher client QPS for the
    # controller manager (the scale benchmark: its default QPS 20 paces every Deployment).
    apiserver_args: tuple[str, ...] = ()
    controller_manager_args: tuple[str, ...] = ()
    # Pods the runner runs get addresses of their own from this test-only range, added to lo
    # while they run (root with CAP_NET_ADMIN; pod_network.py), instead of 127.x addresses,
    # which EndpointSlices refuse: with it a Service's slices list its pods. None: 127.x.
    pod_cidr_on_lo: str | None = None
    # Run the real kube-proxy (kube_proxy.py; needs pod_cidr_on_lo): ClusterIPs reach the pods.
    kube_proxy: bool = False


def render_kubeconfig(server: str, ca: Path, user: str, client: pki.KeyPair) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(client.cert),
                        "client-key": str(client.key),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
    )

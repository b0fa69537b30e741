"""One table of OptimizedModels against one policy, for both enforcers of optiserve.policy.

tests/unit/test_policy.py runs every case through the Python rules (the operator's check);
tests/chart/test_admission_policy.py sends the same OptimizedModels to the real API server,
with the chart's ValidatingAdmissionPolicy bound to this policy, as a user who may create
OptimizedModels and nothing else. Each forbidden case breaks exactly one rule and names the
field both enforcers must name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The policy of the cases: the chart's defaults, with claims and one toleration and node pool
# narrowed so that every rule has something to refuse.
POLICY_DATA: dict[str, str] = {
    "allowedImagePrefixes": "ghcr.io/optiserve/optimizer, nvcr.io/nvidia/tritonserver",
    "maxGpus": "1",
    "maxCpu": "16",
    "maxMemory": "64Gi",
    "allowedNodeSelectors": "nvidia.com/gpu.product=*,pool=ml",
    "allowedTolerations": "dedicated:NoSchedule",
    "allowedSourceClaims": "models,data",
    "allowedStorageClaims": "model-store",
}

Spec = dict[str, Any]


def base_spec() -> Spec:
    return {
        "source": {"uri": "pvc://models/m.onnx"},
        "optimization": {"accuracy": {"dataset": "pvc://data/eval.npz"}},
        "storage": {"pvc": "model-store"},
    }


def model(name: str, spec: Spec, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "optiserve.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": metadata,
        "spec": spec,
    }


@dataclass(frozen=True)
class Case:
    name: str  # a DNS label: also the OptimizedModel's name
    change: Callable[[Spec], None]
    field: str | None  # the field the refusal names; None: allowed

    def spec(self) -> Spec:
        spec = base_spec()
        self.change(spec)
        return spec


def _set(path: str, value: Any) -> Callable[[Spec], None]:
    """A change that sets the dotted ``path`` (creating objects on the way)."""

    def change(spec: Spec) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = copy.deepcopy(value)

    return change


def _both(*changes: Callable[[Spec], None]) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        for one in changes:
            one(spec)

    return change


GPU = _set("optimization.target", {"device": "gpu", "gpuProduct": "NVIDIA-H100-80GB-HBM3"})

ALLOWED = [
    Case("plain", lambda spec: None, None),
    Case("gpu-product", GPU, None),
    Case(
        "own-optimizer", _set("optimization.job.image", "ghcr.io/optiserve/optimizer:0.2.0"), None
    ),
    Case(
        "pinned-triton",
        _set("serving.image", "nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64),
        None,
    ),
    Case(
        "tolerated",
        _set("optimization.job.tolerations", [{"key": "dedicated", "effect": "NoSchedule"}]),
        None,
    ),
    Case("pool", _set("serving.nodeSelector", {"pool": "ml"}), None),
    Case(
        "sized",
        _set("optimization.job.resources", {"limits": {"cpu": "4", "memory": "8Gi"}}),
        None,
    ),
    Case("one-gpu", _both(GPU, _set("serving.resources", {"limits": {"nvidia.com/gpu": 1}})), None),
    Case("one-mig", _set("serving.resources", {"limits": {"nvidia.com/mig-1g.10gb": 1}}), None),
    Case("calibrated", _set("optimization.recovery.dataset", "pvc://data/train.npz"), None),
]

FORBIDDEN = [
    Case(
        "other-image", _set("optimization.job.image", "evil.io/x:1"), "spec.optimization.job.image"
    ),
    Case(
        "lookalike-image",
        _set("optimization.job.image", "ghcr.io/optiserve/optimizer-evil:1"),
        "spec.optimization.job.image",
    ),
    Case("busybox", _set("serving.image", "docker.io/library/busybox:1.36"), "spec.serving.image"),
    Case(
        "tolerate-all",
        _set("optimization.job.tolerations", [{"operator": "Exists"}]),
        "spec.optimization.job.tolerations[0]",
    ),
    Case(
        "any-effect",
        _set("serving.tolerations", [{"key": "dedicated", "operator": "Exists"}]),
        "spec.serving.tolerations[0]",
    ),
    Case(
        "chosen-node",
        _set("optimization.job.nodeSelector", {"kubernetes.io/hostname": "node-1"}),
        "spec.optimization.job.nodeSelector",
    ),
    Case(
        "four-gpus",
        _both(GPU, _set("optimization.job.resources", {"limits": {"nvidia.com/gpu": 4}})),
        "spec.optimization.job.resources",
    ),
    Case(
        "two-migs",
        _set("serving.resources", {"requests": {"nvidia.com/mig-1g.10gb": "2"}}),
        "spec.serving.resources",
    ),
    Case(
        "many-cpus",
        _set("serving.resources", {"limits": {"cpu": 64}}),
        "spec.serving.resources.limits.cpu",
    ),
    Case(
        "much-memory",
        _set("optimization.job.resources", {"requests": {"memory": "1Ti"}}),
        "spec.optimization.job.resources.requests.memory",
    ),
    Case("other-claim", _set("source.uri", "pvc://secrets-claim/m.onnx"), "spec.source.uri"),
    Case("other-store", _set("storage.pvc", "other-store"), "spec.storage.pvc"),
    Case(
        "reads-the-store",
        _set(
            "source.uri", "pvc://model-store/optiserve/ns/victim/a/model_repository/m/1/model.onnx"
        ),
        "spec.source.uri",
    ),
    Case(
        "dot-dot",
        _set("optimization.accuracy.dataset", "pvc://data/../model-store/eval.npz"),
        "spec.optimization.accuracy.dataset",
    ),
    Case("nested-subpath", _set("storage.subPath", "optiserve/ns"), "spec.storage.subPath"),
    # ("..", "/abs" and the like the CRD's schema refuses before any policy is asked.)
    Case("dot-subpath", _set("storage.subPath", "."), "spec.storage.subPath"),
    Case(
        "other-gpu-label",
        _both(GPU, _set("serving.nodeSelector", {"nvidia.com/gpu.count": "8"})),
        "spec.serving.nodeSelector",
    ),
]

CASES = ALLOWED + FORBIDDEN

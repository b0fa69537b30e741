"""Shared spec fixtures: one minimal valid OptimizedModel and a table of invalid ones."""

from __future__ import annotations

import copy
from typing import Any


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "optiserve.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": "m"},
        "spec": {
            "source": {"uri": "pvc://models/m.onnx"},
            "optimization": {"accuracy": {"dataset": "pvc://models/eval.npz"}},
            "storage": {"pvc": "model-store"},
        },
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """``minimal()`` with the dotted ``path`` (under spec) set to ``value``."""
    obj = minimal()
    node = obj["spec"]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = copy.deepcopy(value)
    return obj


def with_metadata(**fields: Any) -> dict[str, Any]:
    obj = minimal()
    obj["metadata"].update(fields)
    return obj


def _two_four_on_cpu() -> dict[str, Any]:
    obj = with_change("source.format", "torchscript")
    obj["spec"]["optimization"]["pruning"] = {"method": "2:4"}
    return obj


def _torch_export_with(path: str, value: Any) -> dict[str, Any]:
    """A torch-export source with ``path`` set: the program is exported, not trained."""
    obj = with_change(path, value)
    obj["spec"]["source"]["format"] = "torch-export"
    return obj


_ACCURACY = {"accuracy": {"dataset": "pvc://models/eval.npz"}, "recovery": {"method": "none"}}


def _huggingface_with(path: str, value: Any) -> dict[str, Any]:
    obj = with_change(path, value)
    obj["spec"]["source"]["format"] = "huggingface"
    obj["spec"]["optimization"]["recovery"] = {"method": "none"}
    return obj


# (what is wrong, the object, a fragment of the field path every checker must name)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field", with_change("source.colour", "blue"), "source.colour"),
    ("unknown field deep", with_change("serving.dynamicBatching.maxDelay", 5), "maxDelay"),
    ("wrong type", with_change("serving.maxBatchSize", "lots"), "maxBatchSize"),
    ("negative size", with_change("serving.responseCache.sizeBytes", -1), "sizeBytes"),
    ("negative replicas", with_change("serving.replicas", -2), "replicas"),
    ("unknown precision", with_change("optimization.quantization.precision", "int4"), "precision"),
    ("unknown pruning", with_change("optimization.pruning.method", "random"), "method"),
    ("sparsity of 1", with_change("optimization.pruning.sparsity", 1.0), "sparsity"),
    ("bad uri", with_change("source.uri", "models/m.onnx"), "source.uri"),
    ("bad sha256", with_change("source.sha256", "abc"), "sha256"),
    ("task without huggingface", with_change("source.task", "feature-extraction"), "task"),
    ("tokenizer without huggingface", with_change("serving.tokenizer", True), "serving.tokenizer"),
    (
        "unknown task",
        with_change("source", {"uri": "/m", "format": "huggingface", "task": "qa"}),
        "task",
    ),
    (
        "preferred batch above max",
        with_change(
            "serving", {"maxBatchSize": 8, "dynamicBatching": {"preferredBatchSizes": [16]}}
        ),
        "preferredBatchSizes",
    ),
    (
        "int8 static without calibration",
        with_change("optimization.quantization", {"precision": "int8", "method": "static"}),
        "calibration",
    ),
    (
        "tensorrt on cpu",
        with_change("optimization.tensorrt", {"enabled": True}),
        "tensorrt",
    ),
    (
        "fp16 on cpu",
        with_change("optimization.quantization", {"precision": "fp16"}),
        "precision",
    ),
    (
        "2:4 with other sparsity",
        with_change("optimization.pruning", {"method": "2:4", "sparsity": 0.7}),
        "sparsity",
    ),
    (
        "profile out of order",
        with_change(
            "optimization",
            {
                "target": {"device": "gpu"},
                "tensorrt": {
                    "enabled": True,
                    "profiles": {"x": {"min": [1, 64], "opt": [8, 32], "max": [32, 128]}},
                },
                "accuracy": {"dataset": "pvc://models/eval.npz"},
            },
        ),
        "profiles",
    ),
    (
        "autoscaling min above max",
        with_change("serving.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "minReplicas",
    ),
    (
        "scale to zero without keda",
        with_change("serving.autoscaling", {"minReplicas": 0}),
        "minReplicas",
    ),
    ("missing accuracy", with_change("optimization", {}), "accuracy"),
    ("bad pvc name", with_change("storage.pvc", "Model_Store"), "pvc"),
    # What the children of an OptimizedModel need (issue 14): refused at admission.
    ("name with a dot", with_metadata(name="my.model"), "metadata.name"),
    ("name starting with a digit", with_metadata(name="1model"), "metadata.name"),
    ("name over 63 characters", with_metadata(name="m" * 64), "metadata.name"),
    (
        "garbage cpu quantity",
        with_change("optimization.job.resources", {"limits": {"cpu": "lots"}}),
        "limits",
    ),
    (
        "negative gpu limit",
        with_change("serving.resources", {"limits": {"nvidia.com/gpu": -1}}),
        "limits",
    ),
    (
        "half a gpu",
        with_change("serving.resources", {"limits": {"nvidia.com/gpu": "0.5"}}),
        "limits",
    ),
    (
        "toleration with an unknown operator",
        with_change("serving.tolerations", [{"key": "gpu", "operator": "Maybe"}]),
        "tolerations",
    ),
    (
        "toleration value with Exists",
        with_change("serving.tolerations", [{"key": "gpu", "operator": "Exists", "value": "1"}]),
        "tolerations[0].value",
    ),
    (
        "toleration key not a qualified name",
        with_change("optimization.job.tolerations", [{"key": "a b", "operator": "Exists"}]),
        "tolerations[0].key",
    ),
    (
        "empty toleration key without Exists",
        with_change("serving.tolerations", [{"key": "", "value": "x"}]),
        "tolerations[0].operator",
    ),
    ("node selector key", with_change("serving.nodeSelector", {"bad key!": "x"}), "nodeSelector"),
    (
        "node selector value",
        with_change("optimization.job.nodeSelector", {"disk": "not a value"}),
        "nodeSelector",
    ),
    (
        "batch sizes not positive",
        with_change("optimization.benchmark.batchSizes", [0, -4]),
        "batch",
    ),
    ("empty image", with_change("serving.image", ""), "serving.image"),
    ("image with spaces", with_change("optimization.job.image", "my image"), "job.image"),
    ("subPath with ..", with_change("storage.subPath", "models/../../etc"), "subPath"),
    ("absolute subPath", with_change("storage.subPath", "/etc"), "subPath"),
    ("storage in two places", with_change("storage.s3", "s3://bucket/x"), "storage.pvc"),
    ("storage nowhere", with_change("storage", {"subPath": "optiserve"}), "storage.pvc"),
    (
        "s3 storage with ..",
        with_change("storage", {"s3": "s3://bucket/a/../b"}),
        "storage.s3",
    ),
    ("autoscaling target fast", with_change("serving.autoscaling", {"target": "fast"}), "target"),
    (
        "duration target for pending requests",
        with_change("serving.autoscaling", {"metric": "pendingRequests", "target": "50ms"}),
        "target",
    ),
    (
        "gpu utilization above 100",
        with_change("serving.autoscaling", {"metric": "gpuUtilization", "target": 150}),
        "target",
    ),
    # Combinations that cannot work (issue 13), refused before any Job.
    (
        "pruning with recovery on an ONNX source",
        with_change("optimization.pruning", {"method": "structured"}),
        "pruning.method",
    ),
    (
        "student on an ONNX source",
        with_change("optimization.student", {"method": "narrow"}),
        "student.method",
    ),
    (
        "pruning with recovery on a torch-export source",
        _torch_export_with("optimization.pruning", {"method": "structured"}),
        "pruning.method",
    ),
    (
        "narrow student on a torch-export source",
        _torch_export_with("optimization.student", {"method": "narrow"}),
        "student.method",
    ),
    (
        "head share with magnitude pruning",
        _huggingface_with("optimization.pruning", {"method": "magnitude", "attentionHeads": 0.5}),
        "pruning.method",
    ),
    (
        "head and FFN shares both 0",
        _huggingface_with(
            "optimization.pruning", {"method": "structured", "attentionHeads": 0.0, "ffn": 0.0}
        ),
        "pruning.ffn",
    ),
    (
        "FFN share on a torch-export source",
        _torch_export_with(
            "optimization", {**_ACCURACY, "pruning": {"method": "structured", "ffn": 0.5}}
        ),
        "optimization.pruning",
    ),
    ("head share of 1", with_change("optimization.pruning.attentionHeads", 1.0), "attentionHeads"),
    (
        "2:4 pruning on cpu",
        _two_four_on_cpu(),
        "pruning.method",
    ),
    # spec.rollout (issue 19): a canary has rising steps and no autoscaler.
    ("canary without steps", with_change("rollout", {"strategy": "canary"}), "steps"),
    (
        "canary weights falling",
        with_change("rollout", {"strategy": "canary", "steps": [{"weight": 50}, {"weight": 10}]}),
        "steps",
    ),
    (
        "canary step at 100%",
        with_change("rollout", {"strategy": "canary", "steps": [{"weight": 100}]}),
        "weight",
    ),
    ("unknown rollout strategy", with_change("rollout.strategy", "blue-green"), "strategy"),
    ("maxSurgeGPUs negative", with_change("rollout.maxSurgeGPUs", -1), "maxSurgeGPUs"),
    (
        "canary with an autoscaler",
        {
            **with_change("rollout", {"strategy": "canary", "steps": [{"weight": 10}]}),
            "spec": {
                **with_change("rollout", {"strategy": "canary", "steps": [{"weight": 10}]})["spec"],
                "serving": {"autoscaling": {"maxReplicas": 3}},
            },
        },
        "rollout.strategy",
    ),
    # serving.exposure (issue 24): one way out, to a DNS name.
    (
        "both an HTTPRoute and an Ingress",
        with_change(
            "serving.exposure",
            {
                "httpRoute": {"parentRefs": [{"name": "gw"}], "hostnames": ["m.example.com"]},
                "ingress": {"host": "m.example.com"},
            },
        ),
        "exposure.httpRoute",
    ),
    ("exposure naming neither", with_change("serving.exposure", {}), "exposure.httpRoute"),
    (
        "ingress host an IP address",
        with_change("serving.exposure", {"ingress": {"host": "10.0.0.1"}}),
        "ingress.host",
    ),
    (
        "route hostname an IP address",
        with_change(
            "serving.exposure.httpRoute",
            {"parentRefs": [{"name": "gw"}], "hostnames": ["m.example.com", "192.168.1.1"]},
        ),
        "hostnames",
    ),
    (
        "route without a Gateway",
        with_change(
            "serving.exposure.httpRoute", {"parentRefs": [], "hostnames": ["m.example.com"]}
        ),
        "parentRefs",
    ),
    (
        "route path with a .. segment",
        with_change(
            "serving.exposure.httpRoute",
            {"parentRefs": [{"name": "gw"}], "hostnames": ["m.example.com"], "path": "/a/../b"},
        ),
        "path",
    ),
    (
        "wildcard ingress host",
        with_change("serving.exposure", {"ingress": {"host": "*.example.com"}}),
        "host",
    ),
    # Names resolve in the model's own namespace only (docs/object-storage.md, "Whose
    # credentials"): no namespace/name form reaches another namespace's Secret or ConfigMap.
    (
        "credentials secret of another namespace",
        with_change("objectStore", {"credentialsSecret": "team-b/artifact-writer"}),
        "credentialsSecret",
    ),
    (
        "ca bundle of another namespace",
        with_change("objectStore", {"caBundle": {"configMap": "team-b/corp-ca"}}),
        "configMap",
    ),
]

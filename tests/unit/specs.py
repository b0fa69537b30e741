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
]

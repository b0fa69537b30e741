"""What the end-to-end tests share: the tiny model's spec and kubectl-based reads and waits."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess

TINY: dict[str, Any] = {
    "apiVersion": "optiserve.io/v1alpha1",
    "kind": "OptimizedModel",
    "metadata": {"name": "tiny"},
    "spec": {
        "source": {"uri": "pvc://models/tiny.onnx"},
        "optimization": {
            "recovery": {"method": "none"},
            "accuracy": {"dataset": "pvc://models/eval.npz", "metric": "top1", "maxDrop": 0.05},
            "benchmark": {"batchSizes": [1], "iterations": 3, "warmup": 1},
        },
        "serving": {"maxBatchSize": 8, "replicas": 2, "rolloutDeadlineSeconds": 60},
        "storage": {"pvc": "model-store"},
    },
}


def tiny(name: str, **spec_changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(TINY)
    obj["metadata"]["name"] = name
    obj["spec"].update(spec_changes)
    return obj


def get(cluster: LocalCluster, ns: str, *what: str) -> Any:
    result = cluster.kubectl("get", "-n", ns, *what, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def items(cluster: LocalCluster, ns: str, kind: str, model: str) -> list[dict[str, Any]]:
    found = get(cluster, ns, kind, "-l", f"optiserve.io/model={model}") or {"items": []}
    return list(found["items"])


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def wait_ready(cluster: LocalCluster, op: OperatorProcess, ns: str, name: str) -> dict[str, Any]:
    def ready() -> bool:
        obj = get(cluster, ns, "om", name)
        return bool(
            obj
            and condition(obj, "Ready").get("status") == "True"
            and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        )

    try:
        wait_until(f"{name} Ready", ready, timeout_s=300)
    except AssertionError:
        described = cluster.kubectl("describe", "-n", ns, "om,job,deploy,pod").stdout
        pytest.fail(f"{name} never became Ready\n{described[-6000:]}\n{op.logs()}")
    obj = get(cluster, ns, "om", name)
    assert obj is not None
    return dict(obj)


def served_digest(cluster: LocalCluster, ns: str, name: str) -> str:
    deployment = get(cluster, ns, "deployment", name)
    return str(
        deployment["spec"]["template"]["metadata"]["annotations"]["optiserve.io/artifact-digest"]
    )

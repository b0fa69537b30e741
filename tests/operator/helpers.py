"""Small builders for reconcile tests: a model, its status after a pass, observed children."""

from __future__ import annotations

import copy
import json
from typing import Any

from optiserve.api import OptimizedModel, OptimizedModelSpec
from optiserve.api.status import OptimizedModelStatus
from optiserve.render.kubernetes import Owner
from optiserve_operator.observe import DeploymentState, JobState
from optiserve_operator.reconcile import Config, ModelState, Observed, Plan, plan

OWNER = Owner(name="digits", namespace="ml", uid="uid-1")
CONFIG = Config(optimizer_image="optimizer:test", poll_seconds=5, resync_seconds=60)
BASE: dict[str, Any] = {
    "apiVersion": "optiserve.io/v1alpha1",
    "kind": "OptimizedModel",
    "metadata": {"name": "digits", "namespace": "ml"},
    "spec": {
        "source": {"uri": "pvc://models/digits.onnx"},
        "optimization": {"accuracy": {"dataset": "pvc://models/eval.npz"}},
        "serving": {"replicas": 2},
        "storage": {"pvc": "model-store"},
    },
}


def spec(**quantization: Any) -> OptimizedModelSpec:
    obj = copy.deepcopy(BASE)
    if quantization:
        obj["spec"]["optimization"]["quantization"] = quantization
    return OptimizedModel.model_validate(obj).spec


def model(
    the_spec: OptimizedModelSpec,
    status: OptimizedModelStatus | None = None,
    generation: int = 1,
    annotations: dict[str, str] | None = None,
) -> ModelState:
    return ModelState(
        owner=OWNER,
        generation=generation,
        annotations=annotations or {},
        spec=the_spec,
        status=status or OptimizedModelStatus(),
    )


# What the Job measured serving the artifact (optimizer/optiserve_optimizer/footprint.py).
SERVING_COST = {
    "peakRssBytes": 472 * 2**20,
    "runtimeRssBytes": 60 * 2**20,
    "cpuSecondsPerInference": 0.002,
    "batch": 32,
    "threads": 2,
    "runtime": "onnxruntime 1.23.2",
}


def summary_message(digest: str, precision: str = "int8") -> str:
    return json.dumps(
        {
            "digest": digest,
            "artifact": {
                # The model's own folder of the store: <subPath>/<namespace>/<name>.
                "modelRepository": (
                    f"/mnt/pvc/model-store/optiserve/ml/digits/{digest}/model_repository"
                ),
                "precision": precision,
                "candidate": f"{precision}-dynamic",
                "servingCost": SERVING_COST,
            },
            "metrics": {"speedup": "2.1x", "accuracyDrop": 0.002, "optimizedLatencyMs": 1.5},
            "candidates": [
                {"name": "fp32", "passed": True},
                {"name": f"{precision}-dynamic", "passed": True, "chosen": True},
            ],
        }
    )


def job(name: str, digest: str, phase: str, message: str = "", reason: str = "") -> JobState:
    return JobState(
        name=name,
        digest=digest,
        retry="",
        phase=phase,  # type: ignore[arg-type]
        message=message,
        failure_reason=reason,
        failure_message=message if phase == "failed" else "",
    )


def deployment(
    digest: str | None,
    *,
    ready: bool = True,
    deadline: bool = False,
    marker: str | None = None,
    replicas: int = 2,
) -> DeploymentState:
    return DeploymentState(
        artifact_digest=digest,
        failed_rollout=marker,
        generation=3,
        observed_generation=3,
        desired_replicas=replicas,
        replicas=replicas,
        updated_replicas=replicas if ready else 1,
        ready_replicas=replicas if ready else 0,
        available_replicas=replicas if ready else 0,
        deadline_exceeded=deadline,
    )


def run(
    state: ModelState,
    jobs: tuple[JobState, ...] = (),
    dep: DeploymentState | None = None,
    now: str = "2026-01-01T00:00:00Z",
    autoscalers: frozenset[str] = frozenset(),
) -> Plan:
    observed = Observed(model=state, jobs=jobs, deployment=dep, autoscalers=autoscalers)
    return plan(observed, now, CONFIG)


def condition(result: Plan, type_: str) -> tuple[str, str]:
    found = next(c for c in result.status.conditions if c.type == type_)
    return found.status, found.reason

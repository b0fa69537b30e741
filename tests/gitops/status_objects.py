"""OptimizedModel objects in every phase, with the status the operator really writes.

The conditions come from the operator's pure condition logic
(``optiserve_operator.conditions``: ``conditions_for`` and ``merge_conditions``), the same
functions a reconcile pass calls, so the GitOps tests check what Argo CD and kstatus will see
rather than a hand-written idea of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from optiserve.api.status import OPTIMIZED, Artifact, OptimizedModelStatus, Phase
from optiserve_operator import conditions as c
from optiserve_operator.canary_rollout import REASON_ABORTED, REASON_CANARY

NOW = "2026-11-26T05:00:00Z"
EARLIER = "2026-11-26T04:00:00Z"
DIGEST = "3f5a9c0e7b1d2468ace013579bdf2468ace013579bdf2468ace013579bdf2468"
ARTIFACT = Artifact(
    digest=DIGEST,
    uri=f"pvc://model-store/optiserve/{DIGEST}/model_repository",
    precision="int8",
)

ArgoHealth = Literal["Healthy", "Progressing", "Degraded"]
KStatus = Literal["Current", "InProgress", "Failed"]


@dataclass(frozen=True)
class Case:
    """One situation, and how a user expects each GitOps tool to report it."""

    name: str
    phase: Phase
    reason: str
    message: str
    optimized: bool
    argo: ArgoHealth
    kstatus: KStatus
    generation: int = 3
    observed_generation: int = 3


CASES: tuple[Case, ...] = (
    Case("pending", "Pending", c.REASON_OPTIMIZING, "waiting", False, "Progressing", "InProgress"),
    Case(
        "optimizing",
        "Optimizing",
        c.REASON_OPTIMIZING,
        "Job minilm-opt-3f5a9c0e7b is optimizing the model",
        False,
        "Progressing",
        "InProgress",
    ),
    Case(
        "deploying",
        "Deploying",
        c.REASON_ROLLING_OUT,
        "rolling out 3f5a9c0e7b1d",
        True,
        "Progressing",
        "InProgress",
    ),
    Case("ready", "Ready", c.REASON_READY, "serving 3f5a9c0e7b1d", True, "Healthy", "Current"),
    Case(
        "job failed",
        "Failed",
        c.REASON_JOB_FAILED,
        "Job minilm-opt-3f5a9c0e7b failed (BackoffLimitExceeded): accuracy drop 0.04 > 0.01",
        False,
        "Degraded",
        "Failed",
    ),
    Case(
        "rollout deadline",
        "Failed",
        c.REASON_DEADLINE,
        "artifact 3f5a9c0e7b1d was not Ready within 600s",
        True,
        "Degraded",
        "Failed",
    ),
    Case(
        "rolled back",
        "Failed",
        c.REASON_ROLLED_BACK,
        "artifact 3f5a9c0e7b1d was not Ready within 600s; rolling back to 0a1b2c3d4e5f",
        True,
        "Degraded",
        "Failed",
    ),
    # A canary rollout (optiserve_operator.canary_rollout): in a step, and aborted.
    Case(
        "canary in a step",
        "Deploying",
        REASON_CANARY,
        "step 1 of 2 at 25%: 40 requests, error rate 0.000, 20s of 60s",
        True,
        "Progressing",
        "InProgress",
    ),
    Case(
        "canary aborted",
        "Failed",
        REASON_ABORTED,
        "canary 3f5a9c0e7b1d aborted at step 1: errorRate: error rate 0.250 (50 of 200 "
        "requests failed) is above maxErrorRate 0.05",
        True,
        "Degraded",
        "Failed",
    ),
    # The user just changed the spec; the status still describes the previous generation.
    Case(
        "ready but stale",
        "Ready",
        c.REASON_READY,
        "serving 3f5a9c0e7b1d",
        True,
        "Progressing",
        "InProgress",
        generation=4,
        observed_generation=3,
    ),
    Case(
        "failed but stale",
        "Failed",
        c.REASON_JOB_FAILED,
        "Job failed",
        False,
        "Progressing",
        "InProgress",
        generation=5,
        observed_generation=4,
    ),
)


def status_for(case: Case) -> OptimizedModelStatus:
    """The status a reconcile pass writes for ``case``, built by the operator's functions."""
    if case.optimized:
        optimized = c.Wanted(OPTIMIZED, "True", c.REASON_OPTIMIZED, "int8 onnx")
    else:
        optimized = c.Wanted(OPTIMIZED, "False", case.reason, case.message)
    outcome = c.Outcome(case.phase, optimized, case.reason, case.message)
    # Start from the previous pass's conditions so lastTransitionTime bookkeeping is real too.
    previous = c.merge_conditions(
        [],
        c.conditions_for(c.Outcome("Pending", optimized, c.REASON_OPTIMIZING, "")),
        EARLIER,
        case.observed_generation,
    )
    conditions = c.merge_conditions(
        previous, c.conditions_for(outcome), NOW, case.observed_generation
    )
    serving = case.phase == "Ready" or case.reason == c.REASON_ROLLED_BACK
    return OptimizedModelStatus(
        observed_generation=case.observed_generation,
        phase=case.phase,
        conditions=conditions,
        artifact=ARTIFACT if case.optimized else None,
        endpoint="http://minilm.ml.svc:8000" if serving else None,
    )


def model_object(case: Case) -> dict[str, Any]:
    """The whole OptimizedModel as the API server returns it (what GitOps tools read)."""
    return {
        "apiVersion": "optiserve.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {
            "name": "minilm",
            "namespace": "ml",
            "generation": case.generation,
            "uid": "0b8e3a52-1111-2222-3333-444455556666",
            "resourceVersion": "4711",
        },
        "spec": {
            "source": {"uri": "pvc://models/minilm.onnx"},
            "optimization": {"accuracy": {"dataset": "pvc://data/eval.npz"}},
            "storage": {"pvc": "model-store"},
        },
        "status": status_for(case).to_wire(),
    }

"""``spec.rollout`` and ``status.rollout``: how a new artifact replaces the served one.

``rolling`` (the default) is the Deployment's own rolling update, rolled back only when the
new pods never become Ready. ``canary`` serves the new artifact from a second Deployment
beside the stable one, at the weight of each step (carried by replica counts behind the one
Service, or exactly by the backend weights of the model's HTTPRoute when it is exposed through
one), and promotes it only while Triton's own metrics of the canary pass the analysis; a
failing check aborts it (see ``optiserve_operator.canary`` and ``canary_route``).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import Field

from optiserve.api.base import ApiModel, object_default
from optiserve.api.rules import CelRule

MAX_STEPS = 10


class RolloutStep(ApiModel):
    """One canary step: the share of traffic the canary gets, and how long it holds there."""

    weight: int = Field(
        ge=1,
        le=99,
        description="Percent of the traffic on the canary: exactly, as the backend weights "
        "of the model's HTTPRoute (serving.exposure.httpRoute); otherwise as the share of "
        "the serving pods that run the canary, rounded to whole pods.",
    )
    pause_seconds: int = Field(
        60,
        ge=0,
        le=86400,
        description="How long the step holds, its analysis passing, before the next one.",
    )


class RolloutAnalysis(ApiModel):
    """The checks on Triton's metrics of the canary pods, read from Prometheus."""

    max_error_rate: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Largest share of the canary's requests that may fail "
        "(nv_inference_request_failure over success + failure).",
    )
    max_latency_p99_ratio: float = Field(
        1.5,
        ge=1.0,
        le=100.0,
        description="Largest p99 request latency of the canary over the stable's, both over "
        "the same window (nv_inference_request_duration_us).",
    )
    min_requests: int = Field(
        20,
        ge=0,
        le=1_000_000_000,
        description="Requests the canary must have served in a step before it may go on: "
        "with fewer the step holds (no traffic is no evidence).",
    )
    interval_seconds: int = Field(
        30, ge=5, le=3600, description="How often the analysis is read during a step."
    )


def _weights_rise_cel() -> str:
    # The API server's CEL has no indexed loop, so the check is unrolled up to MAX_STEPS.
    pairs = [
        f"(size(self.steps) <= {i + 1} || self.steps[{i}].weight < self.steps[{i + 1}].weight)"
        for i in range(MAX_STEPS - 1)
    ]
    return "!has(self.steps) || (" + " && ".join(pairs) + ")"


class RolloutSpec(ApiModel):
    """How a new artifact (or new serving settings) replaces the served one."""

    strategy: Literal["rolling", "canary"] = Field(
        "rolling",
        description="rolling: the Deployment's rolling update, rolled back when the new pods "
        "are not Ready in time; canary: a second Deployment serves the new artifact step by "
        "step and is promoted only while its metrics pass the analysis.",
    )
    steps: list[RolloutStep] = Field(
        default_factory=list,
        max_length=MAX_STEPS,
        description="canary: the weights, rising, each held pauseSeconds; after the last the "
        "canary is promoted to every pod.",
    )
    analysis: RolloutAnalysis = Field(
        default_factory=RolloutAnalysis, json_schema_extra=object_default()
    )
    max_surge_gpus: int = Field(
        0,
        alias="maxSurgeGPUs",
        ge=0,
        le=1024,
        description="GPUs the stable and the canary together may hold beyond the stable's "
        "own during a canary (a GPU model's canary pods must fit in them or in the stable's "
        "share); CPU models may add one pod.",
    )

    rules = (
        CelRule(
            cel="self.strategy != 'canary' || (has(self.steps) && size(self.steps) > 0)",
            message="a canary rollout needs steps: e.g. steps: [{weight: 10}, {weight: 50}]",
            field=".steps",
            check=lambda r: r.strategy != "canary" or len(r.steps) > 0,
        ),
        CelRule(
            cel=_weights_rise_cel(),
            message="canary step weights must rise from one step to the next",
            field=".steps",
            check=lambda r: all(a.weight < b.weight for a, b in pairwise(r.steps)),
        ),
    )


RolloutPhase = Literal["Canary", "Promoting", "Aborted", "Promoted"]


class RolloutStatus(ApiModel):
    """Where a canary stands; kept in status so a restarted operator resumes at the same step."""

    phase: RolloutPhase = Field(
        description="Canary: in a step; Promoting: the stable takes the canary's artifact; "
        "Aborted: the canary failed its analysis (not retried until the spec changes); "
        "Promoted: done."
    )
    stable_digest: str = Field(max_length=64, description="The artifact the stable serves.")
    canary_digest: str = Field(max_length=64, description="The artifact under test.")
    stable_revision: str = Field("", max_length=12, description="stableDigest, shortened.")
    canary_revision: str = Field("", max_length=12, description="canaryDigest, shortened.")
    step: int = Field(0, ge=0, description="Index of the current step in spec.rollout.steps.")
    weight: int = Field(
        0,
        ge=0,
        le=100,
        description="Percent of the traffic on the canary: the step's weight on the "
        "HTTPRoute, or the share of serving pods it has.",
    )
    step_started: str = Field("", description="RFC 3339 time the current step began.")
    generation: int = Field(0, ge=0, description="The spec generation the canary belongs to.")
    message: str = Field("", max_length=1024, description="The last analysis, for a person.")

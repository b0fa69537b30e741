"""``OptimizedModel.status``: what the operator observed.

Conditions use the standard ``metav1.Condition`` shape, so kstatus (Flux), Argo CD and
``kubectl wait --for=condition=Ready`` read them without custom code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from optiserve.api.base import ApiModel
from optiserve.api.rollout import RolloutStatus
from optiserve.api.tuning import TuningSummary

Phase = Literal["Pending", "Optimizing", "Deploying", "Ready", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]

# Condition types (kstatus reads Ready, Reconciling and Stalled).
READY = "Ready"
OPTIMIZED = "Optimized"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
RECONCILING = "Reconciling"
STALLED = "Stalled"


class Condition(ApiModel):
    """metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$",
        description="Ready, Optimized, Progressing, Degraded, Reconciling or Stalled.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Why, as one CamelCase word (e.g. RolledBack, PolicyDenied).",
    )
    message: str = Field("", max_length=32768, description="Why, for a person.")
    last_transition_time: str = Field(description="RFC 3339 time the status last changed.")
    observed_generation: int = Field(
        0, ge=0, description="The spec generation this condition was computed from."
    )


class ServingCost(ApiModel):
    """What serving the artifact cost when the Job ran it: a fresh runtime session (onnxruntime
    or TensorRT) in a child process, loading the served model and running batches."""

    peak_rss_bytes: int = Field(ge=0, description="Child's peak resident memory, all of it.")
    runtime_rss_bytes: int = Field(
        ge=0, description="Peak of the same child after importing the runtime, before loading."
    )
    cpu_seconds_per_inference: float = Field(
        ge=0, description="Process CPU time of the timed batches over the inferences they ran."
    )
    batch: int = Field(ge=1, description="Batch size run (the largest benchmark batch).")
    threads: int = Field(1, ge=1, description="Intra-op threads of the session.")
    runtime: str = Field("", max_length=64, description="onnxruntime or tensorrt, with version.")

    @property
    def model_rss_bytes(self) -> int:
        """What loading and running the model added to the runtime's own memory."""
        return max(0, self.peak_rss_bytes - self.runtime_rss_bytes)


class Artifact(ApiModel):
    """The optimized model being served."""

    digest: str = Field(description="Recipe digest; names the folder in storage.")
    uri: str = Field(description="Triton model repository.")
    precision: str = Field("fp32", description="fp32, fp16 or int8.")
    format: str = Field("onnx", description="onnx or tensorrt_plan.")
    candidate: str = Field("", description="Name of the chosen candidate.")
    report: str | None = Field(
        None,
        description="The optimization's report page (report.html beside the model "
        "repository: pvc://, or s3:// with storage.s3; `optiserve report` renders it from "
        "this URI or the artifact's).",
    )
    source_sha256: str | None = Field(
        None,
        pattern=r"^[a-f0-9]{64}$",
        description="sha256 of the source model the artifact was optimized from (a folder's: "
        "of its sorted 'name sha256' lines), to compare with the file at source.uri now.",
    )
    serving_cost: ServingCost | None = Field(
        None, description="Measured by the Job; the Triton pod's requests are sized from it."
    )
    tuning: TuningSummary | None = Field(
        None, description="The Triton settings the Job searched for serving.tuning."
    )


class MeasurementConditions(ApiModel):
    """Where and how the speed figures were measured (baseline and candidates interleaved)."""

    cpu: str = Field("", max_length=256, description="CPU model from /proc/cpuinfo.")
    gpu: str = Field(
        "",
        max_length=256,
        description="The GPU the figures were measured on (a gpu target); empty: CPUs only.",
    )
    instruction_sets: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="SIMD sets that pick the kernels (avx2, avx512_vnni, amx_int8...).",
    )
    logical_cpus: int | None = Field(None, ge=1, description="CPUs the measuring process saw.")
    threads: int | None = Field(None, ge=1, description="Intra-op threads of every runner.")
    load_average: float | None = Field(None, description="1-minute load average before timing.")
    rounds: int | None = Field(None, ge=1, description="Interleaved rounds the ratio is over.")
    clock: Literal["cpu", "wall"] | None = Field(
        None,
        description="cpu: process CPU time (one thread; a busy machine does not inflate it); "
        "wall: elapsed time (several threads).",
    )
    batch: int | None = Field(None, ge=1, description="Batch size throughput is measured at.")


class Metrics(ApiModel):
    """How the chosen candidate compares with the named baseline, measured in the same run."""

    baseline: str | None = Field(
        None,
        max_length=64,
        description="What speedup is against: the source model in its own framework "
        "(pytorch-torchscript, pytorch-eager for a huggingface or torch-export source, or "
        "onnxruntime-fp32).",
    )
    baseline_latency_ms: float | None = Field(
        None, description="The baseline's p50 latency at the first benchmark batch size."
    )
    optimized_latency_ms: float | None = Field(
        None, description="The chosen candidate's p50 latency at that batch size."
    )
    baseline_throughput: float | None = Field(None, description="Inferences per second.")
    optimized_throughput: float | None = Field(
        None, description="The chosen candidate's inferences per second."
    )
    speedup: str | None = Field(
        None,
        max_length=32,
        description="Throughput over the baseline's, median of interleaved rounds, e.g. '2.41x'.",
    )
    speedup_range: str | None = Field(
        None, max_length=32, description="Lowest and highest per-round ratio, e.g. '2.30x-2.55x'."
    )
    speedup_vs_onnxruntime: str | None = Field(
        None,
        max_length=32,
        description="The same ratio against onnxruntime FP32 of the exported, unmodified model.",
    )
    accuracy_drop: float | None = Field(
        None, description="The chosen candidate's drop in the spec's accuracy metric."
    )
    size_ratio: float | None = Field(None, description="Original size / optimized size.")
    measured: MeasurementConditions | None = None


class Candidate(ApiModel):
    """One variant the optimizer tried, with its verdict."""

    name: str = Field(description="The candidate's steps, e.g. pruned-structured+int8-static.")
    precision: str = Field("fp32", description="fp32, fp16 or int8.")
    latency_ms: float | None = Field(None, description="p50 at the first benchmark batch size.")
    throughput: float | None = Field(None, description="Inferences per second at the largest.")
    accuracy_drop: float | None = Field(None, description="Drop in the spec's accuracy metric.")
    size_bytes: int | None = Field(None, description="Size of the served model file.")
    speedup: str | None = Field(None, max_length=32, description="Against the baseline.")
    passed: bool = Field(False, description="Within the accuracy gate (and every check).")
    failed: bool = Field(False, description="A step could not be applied; reason says why.")
    chosen: bool = Field(False, description="The one packaged and served.")
    reason: str = Field("", description="Why it failed, or why it was or was not chosen.")


class AppliedResources(ApiModel):
    """The Triton container's CPU, memory and ephemeral-storage requests and limits, and why."""

    requests: dict[str, str] = Field(
        default_factory=dict, max_length=8, description="What the scheduler reserves."
    )
    limits: dict[str, str] = Field(
        default_factory=dict, max_length=8, description="Most the container may use."
    )
    basis: str = Field(
        "",
        max_length=512,
        description="Where they come from: the spec, a measurement (with the rule), or defaults.",
    )


class ServingStatus(ApiModel):
    """What the operator set on the Triton pods."""

    resources: AppliedResources | None = None
    tuning: TuningSummary | None = Field(
        None, description="serving.tuning: the settings chosen, throughput, p99, trials run."
    )


class OptimizedModelStatus(ApiModel):
    """Observed state."""

    observed_generation: int = Field(
        0, ge=0, description="The spec generation this status was computed from."
    )
    phase: Phase = Field(
        "Pending", description="Pending, Optimizing, Deploying, Ready or Failed (a summary)."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Standard conditions (kstatus, Argo CD and kubectl wait read them).",
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    artifact: Artifact | None = None
    last_good_artifact: Artifact | None = Field(
        None, description="What is served when a newer artifact fails to roll out."
    )
    recipe_digest: str | None = Field(None, description="Digest of the spec being worked on.")
    job_name: str | None = Field(None, description="The optimization Job of the recipe.")
    metrics: Metrics | None = None
    candidates: list[Candidate] = Field(
        default_factory=list, max_length=64, description="Every candidate tried, with its verdict."
    )
    endpoint: str | None = Field(
        None,
        description="Triton's HTTP/REST endpoint (KServe v2 protocol): the external URL while "
        "spec.serving.exposure routes to the model, else the one in the cluster.",
    )
    cluster_endpoint: str | None = Field(
        None, description="Triton's HTTP/REST endpoint in the cluster (the model's Service)."
    )
    grpc_endpoint: str | None = Field(
        None, description="Triton's gRPC endpoint in the cluster (host:port for tritonclient)."
    )
    replicas: int | None = Field(None, description="Ready Triton pods (scale subresource).")
    selector: str | None = Field(None, description="Label selector of the Triton pods.")
    serving: ServingStatus | None = None
    rollout: RolloutStatus | None = Field(None, description="The canary rollout, while one runs.")

"""``OptimizedModel.spec.serving`` and ``spec.storage``: how the optimized model is served."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from optiserve.api import formats
from optiserve.api.artifact_store import (
    ONE_LOCATION_RULE,
    S3_HELP,
    S3_PREFIX_MAX,
    S3_PREFIX_PATTERN,
)
from optiserve.api.base import INT32_MAX, ApiModel, object_default
from optiserve.api.exposure import ExposureSpec
from optiserve.api.network import NetworkPolicySpec
from optiserve.api.retention import RetentionSpec
from optiserve.api.rules import CelRule
from optiserve.api.spec import LabelValue, ResourceRequirements, Toleration, node_selector_rule
from optiserve.api.text_serving import TOKENIZER_HELP
from optiserve.api.tuning import TuningSpec

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"


class QueuePolicy(ApiModel):
    """What Triton does with requests that wait too long."""

    timeout_action: Literal["REJECT", "DELAY"] = Field(
        "REJECT", description="What Triton does with a request that waited past its timeout."
    )
    default_timeout_microseconds: int = Field(0, ge=0, description="0: no timeout.")
    allow_timeout_override: bool = Field(
        False, description="Whether a request may set its own timeout."
    )
    max_queue_size: int = Field(0, ge=0, le=INT32_MAX, description="0: unbounded.")


class DynamicBatchingSpec(ApiModel):
    """Triton's dynamic batcher: joins concurrent requests into one model execution."""

    enabled: bool = Field(True, description="Batch concurrent requests on the server.")
    max_queue_delay_microseconds: int = Field(
        500, ge=0, le=10_000_000, description="How long a request may wait for a batch."
    )
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=list, max_length=16, description="Batch sizes to form when possible."
    )
    priority_levels: int = Field(0, ge=0, le=16, description="0: one priority for all.")
    default_queue_policy: QueuePolicy | None = Field(None)


class ResponseCacheSpec(ApiModel):
    """Triton's response cache: identical requests are answered without running the model."""

    enabled: bool = Field(False, description="Cache responses of this model.")
    size_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, le=1 << 40, description="Local cache size on each server."
    )


class InstanceGroupSpec(ApiModel):
    """How many copies of the model each server runs, and where."""

    count: int = Field(1, ge=1, le=64, description="Model instances per Triton server.")
    kind: Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU"] = Field(
        "KIND_AUTO", description="Where the instances run; KIND_AUTO: the GPU when there is one."
    )


# A positive number or quantity ("50", "1.5k"), or for queueTime a duration ("50ms").
ScalingTarget = Annotated[
    Annotated[int, Field(ge=1)]
    | Annotated[
        str,
        Field(
            pattern=formats.POSITIVE_QUANTITY_OR_DURATION,
            max_length=formats.QUANTITY_MAX_LENGTH,
        ),
    ],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


def _percent_ok(target: int | str) -> bool:
    text = str(target)
    return formats.matches(formats.PLAIN_NUMBER, text) and float(text) <= 100


class AutoscalingSpec(ApiModel):
    """Scale on Triton's own metrics of requests that wait."""

    provider: Literal["hpa", "keda"] = Field("hpa", description="HorizontalPodAutoscaler or KEDA.")
    min_replicas: int = Field(1, ge=0, le=1000, description="0 (scale to zero) needs keda.")
    max_replicas: int = Field(4, ge=1, le=1000, description="Most Triton pods.")
    metric: Literal["queueTime", "pendingRequests", "gpuUtilization"] = Field(
        "queueTime",
        description=(
            "queueTime: average microseconds a request waited in Triton's queue; "
            "pendingRequests: requests waiting per pod, averaged over a minute; "
            "gpuUtilization: percent."
        ),
    )
    target: ScalingTarget = Field(
        "50000",
        description="Target value per pod, above zero: queueTime in microseconds or a duration "
        "('50ms'), pendingRequests a number of requests, gpuUtilization a percent up to 100.",
    )
    scale_up_stabilization_seconds: int = Field(
        0, ge=0, le=3600, description="How long a higher reading must last before scaling up."
    )
    scale_down_stabilization_seconds: int = Field(
        300, ge=0, le=3600, description="How long a lower reading must last before scaling down."
    )
    prometheus_address: str = Field(
        "http://prometheus-operated.monitoring.svc:9090", description="For keda triggers."
    )

    rules = (
        CelRule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            field=".minReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
        ),
        CelRule(
            cel="self.minReplicas >= 1 || self.provider == 'keda'",
            message="scale to zero (minReplicas: 0) needs provider: keda",
            field=".minReplicas",
            check=lambda a: a.min_replicas >= 1 or a.provider == "keda",
        ),
        CelRule(
            cel="self.metric == 'queueTime' || !string(self.target).matches('"
            + formats.DURATION_SUFFIX
            + "')",
            message="a duration target (like 50ms) fits only metric queueTime",
            field=".target",
            check=lambda a: (
                a.metric == "queueTime"
                or not formats.matches(formats.DURATION_SUFFIX, str(a.target))
            ),
        ),
        CelRule(
            cel="self.metric != 'gpuUtilization' || (string(self.target).matches('"
            + formats.PLAIN_NUMBER
            + "') && double(string(self.target)) <= 100.0)",
            message="a gpuUtilization target is a percent: a plain number up to 100",
            field=".target",
            check=lambda a: a.metric != "gpuUtilization" or _percent_ok(a.target),
        ),
    )


class ServingSpec(ApiModel):
    """The Triton Inference Server deployment."""

    image: str = Field(
        DEFAULT_TRITON_IMAGE,
        max_length=formats.IMAGE_REFERENCE_MAX,
        pattern=formats.IMAGE_REFERENCE,
        description="Triton image reference.",
    )
    replicas: int = Field(1, ge=0, le=1000, description="Ignored while autoscaling is set.")
    max_batch_size: int = Field(32, ge=0, le=4096, description="0: the model takes no batch.")
    dynamic_batching: DynamicBatchingSpec = Field(
        default_factory=DynamicBatchingSpec, json_schema_extra=object_default()
    )
    response_cache: ResponseCacheSpec = Field(
        default_factory=ResponseCacheSpec, json_schema_extra=object_default()
    )
    instance_group: InstanceGroupSpec = Field(
        default_factory=InstanceGroupSpec, json_schema_extra=object_default()
    )
    autoscaling: AutoscalingSpec | None = Field(None, description="Unset: fixed replicas.")
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="Triton's requests and limits; unset ones come from the Job's measurement.",
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Node labels the Triton pods need."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the Triton pods tolerate."
    )
    rollout_deadline_seconds: int = Field(
        600, ge=30, le=86400, description="A rollout not Ready by then is Degraded."
    )
    rollback_on_failure: bool = Field(
        True, description="Serve the last good artifact again when a rollout fails."
    )
    cuda_graphs: bool = Field(False, description="TensorRT models: capture CUDA graphs.")
    tuning: TuningSpec | None = Field(None, description="Unset: the settings above, as given.")
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, json_schema_extra=object_default()
    )
    exposure: ExposureSpec | None = Field(None, description="Unset: reachable in the cluster only.")
    tokenizer: bool = Field(False, description=TOKENIZER_HELP)

    rules = (
        CelRule(
            cel="!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSizes) || "
            "self.dynamicBatching.preferredBatchSizes.all(b, b >= 1 && b <= self.maxBatchSize)",
            message="every preferred batch size must be between 1 and maxBatchSize",
            field=".dynamicBatching.preferredBatchSizes",
            check=lambda s: all(
                1 <= b <= s.max_batch_size for b in s.dynamic_batching.preferred_batch_sizes
            ),
        ),
        CelRule(
            cel="self.maxBatchSize > 0 || !has(self.dynamicBatching) || "
            "!self.dynamicBatching.enabled",
            message="dynamic batching needs maxBatchSize > 0",
            field=".dynamicBatching.enabled",
            check=lambda s: s.max_batch_size > 0 or not s.dynamic_batching.enabled,
        ),
        node_selector_rule("nodeSelector", "node_selector"),
    )


class StorageSpec(ApiModel):
    """Where artifacts (Triton model repositories) are kept."""

    pvc: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=253,
        description="PersistentVolumeClaim in the same namespace (or set s3).",
    )
    s3: str | None = Field(
        None, max_length=S3_PREFIX_MAX, pattern=S3_PREFIX_PATTERN, description=S3_HELP
    )
    sub_path: str = Field(
        "optiserve",
        max_length=1024,
        pattern=formats.RELATIVE_PATH,
        description="Folder inside the claim: a relative path without '..' (pvc only).",
    )
    keep_artifacts_on_delete: bool = Field(
        True, description="Leave artifacts in storage when the OptimizedModel is deleted."
    )
    retention: RetentionSpec = Field(
        default_factory=RetentionSpec,
        description="Superseded artifacts kept in storage (the served and last good always are).",
        json_schema_extra=object_default(),
    )

    rules = (
        ONE_LOCATION_RULE,
        CelRule(
            cel="!has(self.subPath) || !self.subPath.matches('" + formats.PARENT_SEGMENT + "')",
            message="subPath must stay inside the claim: no '..' segment",
            field=".subPath",
            check=lambda s: not formats.matches(formats.PARENT_SEGMENT, s.sub_path),
        ),
    )

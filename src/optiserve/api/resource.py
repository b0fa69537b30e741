"""The ``OptimizedModel`` resource: names, spec and the whole object."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from optiserve.api import formats
from optiserve.api.base import ApiModel, object_default
from optiserve.api.objectstore import PIN_RULES, ObjectStoreSpec
from optiserve.api.rollout import RolloutSpec
from optiserve.api.rules import CelRule
from optiserve.api.serving import ServingSpec, StorageSpec
from optiserve.api.spec import OptimizationSpec, SourceSpec
from optiserve.api.status import OptimizedModelStatus
from optiserve.api.text_serving import TOKENIZER_RULE

GROUP = "optiserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OptimizedModel"
PLURAL = "optimizedmodels"
SINGULAR = "optimizedmodel"
SHORT_NAMES = ("om",)


class OptimizedModelSpec(ApiModel):
    """Desired state: the model, how to optimize it, how to serve it, where to keep it."""

    source: SourceSpec
    optimization: OptimizationSpec
    serving: ServingSpec = Field(default_factory=ServingSpec, json_schema_extra={"default": {}})
    storage: StorageSpec
    object_store: ObjectStoreSpec | None = Field(None, description=ObjectStoreSpec.__doc__)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, json_schema_extra=object_default())

    # The optimizer trains only torch modules: an ONNX graph has no trainable form. A narrow
    # student is built from a TorchScript module, a shallow one from a transformer's layers.
    rules = (
        CelRule(
            cel="!has(self.rollout) || !has(self.rollout.strategy) || "
            "self.rollout.strategy != 'canary' || !has(self.serving) || "
            "!has(self.serving.autoscaling)",
            message="a canary's weight is carried by replica counts, which an autoscaler would "
            "change under it: remove serving.autoscaling or use rollout.strategy: rolling",
            field=".rollout.strategy",
            check=lambda s: s.rollout.strategy != "canary" or s.serving.autoscaling is None,
        ),
        CelRule(
            cel="!has(self.optimization.pruning) || self.optimization.pruning.method == 'none' || "
            "(has(self.source.format) && self.source.format in ['torchscript', 'huggingface']) || "
            "(has(self.optimization.recovery) && self.optimization.recovery.method == 'none')",
            message="recovery after pruning trains the model, which needs source.format: "
            "torchscript or huggingface; set optimization.recovery.method: none to prune an "
            "ONNX or torch-export model as is",
            field=".optimization.pruning.method",
            check=lambda s: (
                s.optimization.pruning.method == "none"
                or s.source.format in ("torchscript", "huggingface")
                or s.optimization.recovery.method == "none"
            ),
        ),
        CelRule(
            cel="!has(self.optimization.pruning) || (!has(self.optimization.pruning.attentionHeads)"
            " && !has(self.optimization.pruning.ffn)) || (has(self.source.format) && "
            "self.source.format == 'huggingface')",
            message="attentionHeads and ffn prune a transformer's heads and FFN neurons, which "
            "needs source.format: huggingface; use sparsity for other sources",
            field=".optimization.pruning",
            check=lambda s: (
                (
                    s.optimization.pruning.attention_heads is None
                    and s.optimization.pruning.ffn is None
                )
                or s.source.format == "huggingface"
            ),
        ),
        CelRule(
            cel="!has(self.optimization.student) || self.optimization.student.method == 'none' || "
            "(has(self.source.format) && ((self.source.format == 'torchscript' && "
            "self.optimization.student.method == 'narrow') || (self.source.format == "
            "'huggingface' && self.optimization.student.method == 'shallow')))",
            message="a student is trained from the source model: narrow needs source.format: "
            "torchscript, shallow needs huggingface; set optimization.student.method: none for "
            "an ONNX or torch-export source",
            field=".optimization.student.method",
            check=lambda s: (
                s.optimization.student.method == "none"
                or (s.source.format, s.optimization.student.method)
                in (("torchscript", "narrow"), ("huggingface", "shallow"))
            ),
        ),
        TOKENIZER_RULE,
        *PIN_RULES,
    )


# The API server's limit on all annotations of one object together (keys and values, bytes).
ANNOTATIONS_MAX_BYTES = 256 * 1024


def _truncated(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class ObjectMeta(ApiModel):
    """``metadata`` as the API server checks it on create; unknown keys are refused there too.

    Fields the server fills in (uid, creationTimestamp, ...) are accepted as it accepts them,
    so the output of ``kubectl get -o yaml`` validates.
    """

    name: str = Field(
        max_length=formats.DNS1035_LABEL_MAX,
        pattern=formats.DNS1035_LABEL,
        description="A DNS label: it names the Deployment and Service too.",
    )
    generate_name: str | None = None
    namespace: str | None = Field(None, max_length=63, pattern=formats.DNS1123_LABEL)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    # Filled in by the API server; what a client sends is ignored or checked there.
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    managed_fields: list[dict[str, Any]] | None = None
    self_link: str | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not formats.qualified_name_ok(key):
                raise ValueError(f"label key {_truncated(key)} is not a qualified name")
            if not formats.label_value_ok(value):
                raise ValueError(
                    f"label value {_truncated(value)} of {_truncated(key)} is not a label value "
                    "(63 letters, digits, '-', '_', '.' at most)"
                )
        return labels

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, annotations: dict[str, str]) -> dict[str, str]:
        for key in annotations:
            # The API server lower-cases annotation keys before it checks them.
            if not formats.qualified_name_ok(key.lower()):
                raise ValueError(f"annotation key {_truncated(key)} is not a qualified name")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
        if size > ANNOTATIONS_MAX_BYTES:
            raise ValueError(
                f"annotations take {size} bytes; the API server allows {ANNOTATIONS_MAX_BYTES} "
                "in all"
            )
        return annotations

    @field_validator("finalizers")
    @classmethod
    def _finalizers(cls, finalizers: list[str]) -> list[str]:
        for finalizer in finalizers:
            if not formats.qualified_name_ok(finalizer):
                raise ValueError(f"finalizer {_truncated(finalizer)} is not a qualified name")
        return finalizers


class OptimizedModel(ApiModel):
    """A model to optimize and serve."""

    api_version: Literal["optiserve.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["OptimizedModel"]
    metadata: ObjectMeta
    spec: OptimizedModelSpec
    status: OptimizedModelStatus | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> OptimizedModel:
        return cls.model_validate(obj)

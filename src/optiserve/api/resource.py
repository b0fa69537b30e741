"""The ``OptimizedModel`` resource: names, spec and the whole object."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from optiserve.api.base import ApiModel
from optiserve.api.serving import ServingSpec, StorageSpec
from optiserve.api.spec import OptimizationSpec, SourceSpec
from optiserve.api.status import OptimizedModelStatus

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


class ObjectMeta(ApiModel):
    """The part of metadata ``optiserve validate`` checks; the API server owns the rest."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: str = Field(
        max_length=63,
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        description="A DNS label: it names the Deployment and Service too.",
    )
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


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

"""The base every API model shares: camelCase on the wire, unknown fields refused."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from optiserve.api import formats
from optiserve.api.rules import RuledModel

# Integers the API server stores are int64 (optiserve.validate refuses larger ones anywhere);
# the int32 fields of the Pods and Jobs the operator makes are bounded in the models.
INT32_MAX = (1 << 31) - 1


class ApiModel(RuledModel):
    """Python attributes are snake_case; YAML and JSON keys are camelCase, as in Kubernetes."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def object_default() -> dict[str, Any]:
    """Schema extra for an object field whose default is its empty object.

    The API server only applies defaults inside objects that exist; defaulting the parent to
    ``{}`` makes the server fill in the same nested defaults the Python models do.
    """
    return {"default": {}}


# A Kubernetes resource quantity that is not negative ("500m", "2Gi", 1). Rendered as
# int-or-string in the CRD, the integer and string constraints side by side.
Quantity = Annotated[
    Annotated[int, Field(ge=0)]
    | Annotated[str, Field(pattern=formats.QUANTITY, max_length=formats.QUANTITY_MAX_LENGTH)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]

"""A model's inputs and outputs, as Triton and the optimizer both need them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``shape`` excludes the batch dimension; -1 marks a dynamic one."""

    name: str
    dtype: str  # numpy spelling: "float32", "float16", "int64", "int32", "bool", ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batched: bool = True  # the first dimension of every tensor is the batch
    extra: dict[str, str] = field(default_factory=dict)

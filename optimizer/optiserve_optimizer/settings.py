"""Each pass's typed settings: unknown fields refused, defaults read from the API models.

The plan (``plan.py``) writes a step's parameters as a camelCase mapping (it is what the
recipe digest and ``describe_plan`` show); a pass turns that mapping into its own settings
model first thing (``SomeSettings.of(config, NAME)``), so a misspelt or unknown key is an error
naming the pass, not a silently ignored default. Where the user can set a value, its default
is the API model's (``src/optiserve/api/spec.py``): there is one place to change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from optiserve.api import (
    CalibrationSpec,
    PruningSpec,
    QuantizationSpec,
    RecoverySpec,
    SourceSpec,
    StudentSpec,
    TargetSpec,
    TensorRTSpec,
)
from optiserve_optimizer.errors import SettingsError


def api_default(model: type[BaseModel], field: str) -> Any:
    """The default the API model gives ``field``."""
    return model.model_fields[field].get_default(call_default_factory=True)


class PassSettings(BaseModel):
    """The base of every pass's settings: camelCase keys accepted, unknown ones refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    @classmethod
    def of(cls, given: PassSettings | Mapping[str, Any], pass_name: str) -> Self:
        """``given`` as this model; a ``SettingsError`` naming the pass and the field if not."""
        if isinstance(given, cls):
            return given
        raw = given.model_dump(by_alias=True) if isinstance(given, BaseModel) else dict(given)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors()
            )
            raise SettingsError(pass_name, f"invalid settings {raw}: {problems}") from exc


class LoadExportSettings(PassSettings):
    # Both name what is loaded, so they are part of the step (and of the recipe digest).
    format: Literal["onnx", "torchscript", "torch-export", "huggingface"] = api_default(
        SourceSpec, "format"
    )
    sha256: str | None = None


class GraphOptSettings(PassSettings):
    device: Literal["cpu", "gpu"] = api_default(TargetSpec, "device")
    # "basic" keeps standard ops (a quantizer or TensorRT follows); "extended" fuses further.
    level: Literal["basic", "extended"] = "extended"


class PruneSettings(PassSettings):
    method: Literal["magnitude", "structured", "2:4"]
    sparsity: float = Field(api_default(PruningSpec, "sparsity"), gt=0.0, lt=1.0)


class RecoverSettings(PassSettings):
    method: Literal["finetune", "distill"] = api_default(RecoverySpec, "method")
    epochs: int = Field(api_default(RecoverySpec, "epochs"), ge=1)
    learning_rate: float = Field(api_default(RecoverySpec, "learning_rate"), gt=0.0)
    dataset: str
    keep_zeros: bool = False  # magnitude and 2:4 zeros stay zero while training
    # Softens the teacher's logits (distill on a top1 model); the spec's student.temperature.
    temperature: float = Field(api_default(StudentSpec, "temperature"), gt=0.0)


class QuantizeSettings(PassSettings):
    precision: Literal["fp16", "int8"]
    method: Literal["dynamic", "static"] = api_default(QuantizationSpec, "method")
    calibration: str | None = None  # .npz URI; static only
    samples: int = Field(api_default(CalibrationSpec, "samples"), ge=1)
    calibrate: Literal["minmax", "entropy", "percentile"] = api_default(CalibrationSpec, "method")
    # Static only: activations with zero-point 0, as TensorRT's Q/DQ need (the plan sets it on
    # the quantize step before a TensorRT build); it fixes the types to signed int8, unmeasured.
    symmetric: bool = False

    @model_validator(mode="after")
    def _symmetric_is_static_int8(self) -> Self:
        if self.symmetric and (self.precision != "int8" or self.method != "static"):
            raise ValueError("symmetric applies to static INT8 quantization only")
        return self


class ShapesSettings(PassSettings):
    dataset: str | None = None  # defaults to the accuracy dataset


class TensorRTSettings(PassSettings):
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    sparse_weights: bool = api_default(TensorRTSpec, "sparse_weights")
    workspace_mib: int = Field(api_default(TensorRTSpec, "workspace_mib"), ge=1)
    timing_cache: bool = api_default(TensorRTSpec, "timing_cache")
    profiles: dict[str, dict[str, list[int]]] = Field(default_factory=dict)


class TransformerFusionSettings(PassSettings):
    """onnxruntime's transformer fusions (``passes/hf_fusion.py``) for this device's kernels."""

    device: Literal["cpu", "gpu"] = api_default(TargetSpec, "device")


class PruneTransformerSettings(PassSettings):
    """huggingface sources (``passes/hf_compress.py``): shares of each layer's attention heads
    and FFN neurons removed, by importance measured on ``samples`` of ``dataset``."""

    heads: float = Field(0.0, ge=0.0, lt=1.0)
    ffn: float = Field(0.0, ge=0.0, lt=1.0)
    dataset: str
    samples: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _something_to_prune(self) -> Self:
        if self.heads == self.ffn == 0.0:
            raise ValueError("nothing to prune: heads and ffn shares are 0")
        return self


class DropLayersSettings(PassSettings):
    # The layers a shallow student keeps; None: half of the teacher's.
    layers: int | None = Field(api_default(StudentSpec, "layers"), ge=1)


class DistillSettings(PassSettings):
    """Distillation of a compressed transformer from the original (the teacher)."""

    epochs: int = Field(api_default(StudentSpec, "epochs"), ge=1)
    learning_rate: float = Field(gt=0.0)  # the plan sets it (transformers need a lower one)
    dataset: str
    temperature: float = Field(api_default(StudentSpec, "temperature"), gt=0.0)


# What a pass's ``run`` accepts: its settings model, or the plan's mapping of them.
PassConfig = PassSettings | Mapping[str, Any]

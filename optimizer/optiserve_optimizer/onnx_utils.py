"""Small helpers around onnx/onnxruntime shared by the passes (imports stay inside)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from optiserve.model_io import ModelSignature, TensorSpec
from optiserve_optimizer.errors import ModelLoadError, PassFailedError

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

THREADS_ENV = "OPTISERVE_THREADS"
EXPORT_TOLERANCE = 1e-3  # relative to the output scale; float reassociation differs by runtime


def threads() -> int:
    """Intra-op threads for every session: modest by default, machines are shared."""
    return max(1, int(os.environ.get(THREADS_ENV, "0")) or min(4, os.cpu_count() or 1))


def load_model(path: Path, pass_name: str) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ModelLoadError(pass_name, f"model file {path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(pass_name, f"{path.name} is not a valid ONNX model: {exc}") from exc
    return model


_ONNX_TO_NUMPY = {
    1: "float32",
    10: "float16",
    6: "int32",
    7: "int64",
    9: "bool",
    11: "float64",
    2: "uint8",
    3: "int8",
}


def signature(model: onnx.ModelProto) -> ModelSignature:
    """Inputs and outputs without the batch axis (-1 where dynamic); initializers excluded."""
    init_names = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return TensorSpec(
            value.name, _ONNX_TO_NUMPY.get(tensor.elem_type, "float32"), tuple(dims[1:])
        )

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in init_names)
    return ModelSignature(inputs=inputs, outputs=tuple(spec(v) for v in model.graph.output))


def session(
    path: Path, providers: Sequence[str] = ("CPUExecutionProvider",), level: str = "all"
) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=chosen)


def providers_for(device: str) -> tuple[str, ...]:
    if device == "gpu":
        return ("CUDAExecutionProvider", "CPUExecutionProvider")
    return ("CPUExecutionProvider",)


def compare_outputs(
    ref: Sequence[npt.NDArray[np.float32]], got: Sequence[npt.NDArray[np.float32]]
) -> float:
    """Largest absolute difference relative to the reference's scale (max |ref|, at least 1)."""
    worst = 0.0
    for a, b in zip(ref, got, strict=True):
        scale = max(1.0, float(np.max(np.abs(a))) if a.size else 1.0)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale if a.size else 0.0)
    return worst


def check_export(
    reference: Callable[[Mapping[str, npt.NDArray[Any]]], Sequence[npt.NDArray[Any]]],
    onnx_path: Path,
    samples: Sequence[Mapping[str, npt.NDArray[Any]]],
    pass_name: str,
    reference_name: str,
) -> float:
    """Largest relative output difference (``compare_outputs``) between ``reference`` (the
    model in its own framework, called on a feed) and the exported ONNX on onnxruntime over
    ``samples``; above ``EXPORT_TOLERANCE`` a ``PassFailedError`` naming ``reference_name``."""
    sess = session(onnx_path, level="disable")
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for feed in samples:
        got = sess.run(None, {n: feed[n] for n in names})
        worst = max(worst, compare_outputs(reference(feed), got))
    if worst > EXPORT_TOLERANCE:
        raise PassFailedError(
            pass_name,
            f"exported ONNX differs from {reference_name} by {worst:.3g} (> {EXPORT_TOLERANCE})",
        )
    return worst

"""Quantization with onnxruntime: FP16, INT8 dynamic (weights) and INT8 static QDQ (calibrated).

The calibration reader streams the ``.npz`` in small batches (see ``data.iter_batches``), so a
calibration set never sits in memory all at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from optiserve.uri import local_path
from optiserve_optimizer import data
from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import PassFailedError, UnsupportedOpError
from optiserve_optimizer.onnx_utils import load_model, signature

NAME = "quantize"
CALIBRATION_BATCH = 16
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
# Ops onnxruntime's quantizers turn into integer kernels; a model without any gains nothing.
INT8_DYNAMIC_OPS = {
    "MatMul",
    "Gemm",
    "Conv",
    "Attention",
    "LSTM",
    "Gather",
    "EmbedLayerNormalization",
}
# Static QDQ quantizes these only. Elementwise Add/Mul/Where are left in float on purpose: in
# transformers they carry the additive attention mask (about -3.4e38), whose int8 range wipes
# out every activation (MiniLM's mean cosine fell to 0.40 with them quantized).
INT8_STATIC_OPS = {
    "Gather",  # embedding tables: weights only
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Relu",
    "Clip",
    "Concat",
    "Resize",
    "Split",
}
QUANTIZED_OPS = {
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
    "DynamicQuantizeMatMul",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QAttention",
    "QGemm",
}


class StreamingReader:
    """onnxruntime ``CalibrationDataReader`` over an ``.npz``, a few rows at a time."""

    def __init__(self, path: Path, names: list[str], samples: int) -> None:
        self.path, self.names, self.samples = path, names, samples
        self._batches: Iterator[dict[str, Any]] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, Any] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # entropy/percentile calibrators may read twice
        self._batches = data.iter_batches(self.path, self.names, CALIBRATION_BATCH, self.samples)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def check_ops(model: Any, supported: set[str], what: str) -> list[str]:
    """Refuses ops from unknown domains; returns the op types the quantizer will handle."""
    unknown = sorted(
        {f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in KNOWN_DOMAINS}
    )
    if unknown:
        raise UnsupportedOpError(NAME, f"{what} cannot handle custom ops {unknown}")
    handled = sorted({n.op_type for n in model.graph.node} & supported)
    if not handled:
        ops = sorted({n.op_type for n in model.graph.node})
        raise UnsupportedOpError(
            NAME,
            f"{what} has nothing to quantize: the model's ops {ops} include none of "
            f"{sorted(supported)}",
        )
    return handled


def _count_quantized(path: Path) -> int:
    model = load_model(path, NAME)
    return sum(1 for n in model.graph.node if n.op_type in QUANTIZED_OPS)


class Quantize:
    name = NAME

    def run(
        self, artifact: ModelArtifact, config: Mapping[str, Any], ctx: PassContext
    ) -> PassResult:
        precision = str(config["precision"])
        model = load_model(artifact.onnx, NAME)
        if precision == "fp16":
            return self._fp16(artifact, model, ctx)
        method = str(config.get("method", "dynamic"))
        out = ctx.output(artifact, f"int8-{method}.onnx")
        # onnxruntime's quantizer logs a pre-processing hint on the root logger at WARNING;
        # graph_opt(level=basic) already did that pre-processing.
        logging.getLogger().setLevel(logging.ERROR)
        from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static
        from onnxruntime.quantization.calibrate import CalibrationMethod
        from onnxruntime.quantization.quant_utils import QuantFormat

        if method == "dynamic":
            handled = check_ops(model, INT8_DYNAMIC_OPS, "INT8 dynamic quantization")
            try:
                # Per-channel weight scales: per-tensor ones cost MiniLM 0.03 of mean cosine.
                quantize_dynamic(
                    str(artifact.onnx), str(out), weight_type=QuantType.QInt8, per_channel=True
                )
            except Exception as exc:  # onnxruntime raises bare exceptions for unsupported graphs
                raise UnsupportedOpError(NAME, f"INT8 dynamic quantization failed: {exc}") from exc
        else:
            handled = check_ops(model, INT8_STATIC_OPS, "INT8 static quantization")
            path = local_path(str(config["calibration"]))
            inputs = signature(model).inputs
            data.check_against(path, inputs, NAME)
            reader = StreamingReader(
                path, [t.name for t in inputs], int(config.get("samples", 256))
            )
            calibrate = {
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[str(config.get("calibrate", "minmax"))]
            try:
                quantize_static(
                    str(artifact.onnx),
                    str(out),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    calibrate_method=calibrate,
                    op_types_to_quantize=sorted(INT8_STATIC_OPS),
                    extra_options={
                        # TensorRT's Q/DQ are symmetric only; onnxruntime runs either.
                        "ActivationSymmetric": bool(config.get("symmetric", False)),
                        "WeightSymmetric": True,
                    },
                )
            except Exception as exc:
                raise UnsupportedOpError(NAME, f"INT8 static quantization failed: {exc}") from exc
        quantized = _count_quantized(out)
        if quantized == 0:
            raise UnsupportedOpError(
                NAME, f"INT8 {method} quantization changed no op (candidates were {handled})"
            )
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, onnx=out, precision="int8", torch=None),
            {
                "method": method,
                "quantizedNodes": quantized,
                "bytes": out.stat().st_size,
                "bytesBefore": artifact.onnx.stat().st_size,
            },
        )

    def _fp16(self, artifact: ModelArtifact, model: Any, ctx: PassContext) -> PassResult:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        out = ctx.output(artifact, "fp16.onnx")
        converted = convert_float_to_float16(model, keep_io_types=True)
        # The converter appends the input casts at the end of the node list; onnxruntime sorts
        # for itself, but the ONNX checker and TensorRT's parser need a topological order.
        sort_topologically(converted.graph)
        onnx.save(converted, str(out))
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, onnx=out, precision="fp16", torch=None),
            {"bytes": out.stat().st_size, "bytesBefore": artifact.onnx.stat().st_size},
        )


def sort_topologically(graph: Any) -> None:
    """Reorders ``graph.node`` in place so every node follows the producers of its inputs,
    keeping the existing order wherever it already does."""
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            names = sorted({i for n in pending for i in n.input} - available)[:5]
            raise PassFailedError(NAME, f"the FP16 graph has inputs no node produces: {names}")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if not any(n is r for r in ready)]
    copies = []
    for node in ordered:  # copies: protobuf may invalidate the originals when the list is cleared
        copy = type(node)()
        copy.CopyFrom(node)
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(copies)

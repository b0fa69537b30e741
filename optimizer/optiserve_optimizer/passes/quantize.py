"""Quantization with onnxruntime: FP16, INT8 dynamic (weights) and INT8 static QDQ (calibrated).

The calibration reader streams the ``.npz`` in small batches (see ``data.iter_batches``), so a
calibration set never sits in memory all at once. What onnxruntime keeps per batch is its
own: MinMax keeps each batch's per-tensor minima and maxima until the end (its
``CalibMaxIntermediateOutputs`` would bound that, but onnxruntime 1.32 drops the batches it
clears instead of folding them in: other ranges), entropy and percentile keep each batch's
activations for their histograms.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optiserve.uri import local_path
from optiserve_optimizer import data
from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import PassFailedError, SettingsError, UnsupportedOpError
from optiserve_optimizer.onnx_utils import load_model, session, signature, threads
from optiserve_optimizer.passes import int8_types
from optiserve_optimizer.settings import PassConfig, QuantizeSettings

NAME = "quantize"
CALIBRATION_BATCH = 16
SLICE_ROWS = 32  # calibration rows the INT8 type combinations are compared and timed on
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


def _quantize_static(
    src: Path,
    out: Path,
    reader: StreamingReader,
    choice: int8_types.TypeChoice,
    calibrate: Any,
    cache: Path | None = None,
    *,
    symmetric: bool = False,
) -> None:
    """``cache``: calibration ranges saved by the first call and read by the next ones (float
    min/max per tensor, whatever the integer types), so the calibration data is run once.
    ``symmetric``: activations with zero-point 0 (TensorRT's Q/DQ); weights always are. It also
    keeps biases in float: TensorRT's ONNX parser refuses a DequantizeLinear of int32 (seen on
    a lent H100: "conv1.bias_DequantizeLinear: input has type Int32 but must have type ... Int8")
    and fuses the float bias into the int8 kernel itself."""
    from onnxruntime.quantization import QuantType, quantize_static
    from onnxruntime.quantization.quant_utils import QuantFormat

    reader.rewind()
    try:
        quantize_static(
            str(src),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType[choice.activation],
            weight_type=QuantType[choice.weight],
            per_channel=choice.per_channel,
            calibrate_method=calibrate,
            op_types_to_quantize=sorted(INT8_STATIC_OPS),
            extra_options={
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                "QuantizeBias": not symmetric,
            },
            calibration_cache_path=cache,
        )
    except Exception as exc:  # onnxruntime raises bare exceptions for unsupported graphs
        raise UnsupportedOpError(
            NAME, f"INT8 static quantization ({choice.label}) failed: {exc}"
        ) from exc


def _measured_types(
    src: Path,
    out: Path,
    reader: StreamingReader,
    calibrate: Any,
    calibration: Path,
    inputs: Sequence[Any],
) -> dict[str, Any]:
    """Quantizes with every candidate type combination, keeps the fastest faithful one at ``out``.

    Each candidate and FP32 run the first calibration rows, timed interleaved; the report
    holds every candidate's timings, error and whether it failed, with the CPU's facts.
    """
    feed = data.load(calibration, [t.name for t in inputs], limit=SLICE_ROWS)
    fp32 = session(src)
    reference = fp32.run(None, feed)
    runners: dict[str, Any] = {"fp32": lambda: fp32.run(None, feed)}
    errors: dict[str, float] = {}
    paths: dict[str, Path] = {}
    failed: list[dict[str, str]] = []
    cache = out.with_name(f"{out.stem}-calibration.json")
    cache.unlink(missing_ok=True)  # never another run's ranges
    for choice in int8_types.CANDIDATES:
        path = out.with_name(f"{out.stem}-{choice.label}.onnx")
        try:
            _quantize_static(src, path, reader, choice, calibrate, cache)
            sess = session(path)
            errors[choice.label] = int8_types.relative_error(reference, sess.run(None, feed))
        except Exception as exc:  # a combination this model or CPU cannot run fails alone
            failed.append({"types": choice.label, "reason": str(exc).splitlines()[0][:300]})
            continue
        paths[choice.label] = path
        runners[choice.label] = lambda sess=sess: sess.run(None, feed)
    if not errors:
        raise UnsupportedOpError(
            NAME, f"INT8 static quantization failed with every type combination: {failed}"
        )
    times = int8_types.time_interleaved(runners)
    medians = {label: float(np.median(t)) for label, t in times.items()}
    chosen, matching = int8_types.pick(errors, times)
    paths[chosen].replace(out)
    for path in [*paths.values(), cache]:
        path.unlink(missing_ok=True)
    choice = next(c for c in int8_types.CANDIDATES if c.label == chosen)
    trials = [
        {
            "types": label,
            "relError": round(errors[label], 5),
            "matches": label in matching,
            **int8_types.summarize(times[label]),
            "speedupVsFp32": round(medians["fp32"] / medians[label], 3),
        }
        for label in errors
    ]
    return {
        "chosen": chosen,
        "activationType": choice.activation,
        "weightType": choice.weight,
        "perChannel": choice.per_channel,
        "rule": "preferred first matching, unless another matching is faster beyond the noise "
        f"(lower median and faster in {int8_types.WIN_SHARE:.0%} of paired rounds)",
        "trials": trials,
        "failed": failed,
        "fp32": int8_types.summarize(times["fp32"]),
        "rows": len(next(iter(feed.values()))),
        "rounds": int8_types.ROUNDS,
        "threads": threads(),
        "cpu": int8_types.cpu_facts(),
    }


def _count_quantized(path: Path) -> int:
    model = load_model(path, NAME)
    return sum(1 for n in model.graph.node if n.op_type in QUANTIZED_OPS)


class Quantize:
    name = NAME
    settings_type = QuantizeSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        settings = QuantizeSettings.of(config, NAME)
        precision = settings.precision
        model = load_model(artifact.onnx, NAME)
        if precision == "fp16":
            return self._fp16(artifact, model, ctx)
        method = settings.method
        out = ctx.output(artifact, f"int8-{method}.onnx")
        # onnxruntime's quantizer logs a pre-processing hint on the root logger at WARNING;
        # graph_opt(level=basic) already did that pre-processing.
        logging.getLogger().setLevel(logging.ERROR)
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.calibrate import CalibrationMethod

        types: dict[str, Any] = {}
        if method == "dynamic":
            handled = check_ops(model, INT8_DYNAMIC_OPS, "INT8 dynamic quantization")
            try:
                # Per-channel weight scales: per-tensor ones cost MiniLM 0.03 of mean cosine.
                # A fused transformer's contrib ops (Attention, SkipLayerNormalization) give
                # shape inference no output types: they are float, as the default says.
                quantize_dynamic(
                    str(artifact.onnx),
                    str(out),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
            except Exception as exc:  # onnxruntime raises bare exceptions for unsupported graphs
                raise UnsupportedOpError(NAME, f"INT8 dynamic quantization failed: {exc}") from exc
        else:
            handled = check_ops(model, INT8_STATIC_OPS, "INT8 static quantization")
            if settings.calibration is None:
                raise SettingsError(NAME, "INT8 static quantization needs calibration data")
            path = local_path(settings.calibration)
            inputs = signature(model).inputs
            data.check_against(path, inputs, NAME)
            reader = StreamingReader(path, [t.name for t in inputs], settings.samples)
            calibrate = {
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[settings.calibrate]
            if settings.symmetric:
                # TensorRT follows: it reads signed int8 with zero-point 0 only, so the type is
                # fixed and a CPU timing would say nothing about the engine.
                _quantize_static(
                    artifact.onnx, out, reader, int8_types.GPU_CHOICE, calibrate, symmetric=True
                )
                types = {
                    "chosen": int8_types.GPU_CHOICE.label,
                    "activationSymmetric": True,
                    "reason": "TensorRT follows: symmetric signed int8 Q/DQ",
                }
            elif ctx.spec.target.device == "cpu":
                types = _measured_types(artifact.onnx, out, reader, calibrate, path, inputs)
            else:
                _quantize_static(artifact.onnx, out, reader, int8_types.GPU_CHOICE, calibrate)
                types = {
                    "chosen": int8_types.GPU_CHOICE.label,
                    "activationSymmetric": False,
                    "reason": "gpu target: TensorRT and CUDA read signed int8 QDQ",
                }
        quantized = _count_quantized(out)
        if quantized == 0:
            raise UnsupportedOpError(
                NAME, f"INT8 {method} quantization changed no op (candidates were {handled})"
            )
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, onnx=out, precision="int8", torch=None),
            {
                "method": method,
                "ops": handled,
                **({"int8Types": types} if types else {}),
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

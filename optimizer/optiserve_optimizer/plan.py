"""Spec → ordered candidate list. Pure: no torch, onnxruntime or file access.

Every candidate is a list of pass steps applied to the source model. The first candidate is
always ``fp32`` (the exported model with graph optimizations), the reference every other
candidate is gated against and the fallback when nothing else passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optiserve.api import OptimizationSpec, SourceSpec

# Step names, in the order they may appear inside one candidate.
LOAD_EXPORT = "load_export"
PRUNE = "prune"
RECOVER = "recover"
GRAPH_OPT = "graph_opt"
QUANTIZE = "quantize"
SHAPES = "shapes"
TENSORRT = "tensorrt"
# Transformer compression (huggingface sources; passes/hf_compress.py).
DROP_LAYERS = "drop_layers"
PRUNE_TRANSFORMER = "prune_transformer"
DISTILL = "distill"
FUSE_TRANSFORMER = "fuse_transformer"  # onnxruntime's transformer fusions (passes/hf_fusion.py)
STEP_ORDER = (
    LOAD_EXPORT,
    DROP_LAYERS,
    PRUNE,
    PRUNE_TRANSFORMER,
    RECOVER,
    DISTILL,
    FUSE_TRANSFORMER,
    GRAPH_OPT,
    QUANTIZE,
    SHAPES,
    TENSORRT,
)
TRANSFORMER_LEARNING_RATE = 1e-4  # when unset: the API's 1e-3 default unlearns a pretrained encoder


@dataclass(frozen=True)
class Step:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()) if v is not None)
        return f"{self.name}({args})" if args else self.name


@dataclass(frozen=True)
class CandidatePlan:
    name: str
    precision: str
    steps: tuple[Step, ...]

    @property
    def engine(self) -> str:
        """``onnx`` or ``tensorrt_plan``: what the packaged model file is."""
        return "tensorrt_plan" if any(s.name == TENSORRT for s in self.steps) else "onnx"


@dataclass(frozen=True)
class Plan:
    candidates: tuple[CandidatePlan, ...]
    notes: tuple[str, ...] = ()

    def names(self) -> list[str]:
        return [c.name for c in self.candidates]


def _quantize_step(spec: OptimizationSpec) -> tuple[str, Step] | None:
    quant = spec.quantization
    if quant.precision == "fp32":
        return None
    if quant.precision == "fp16":
        return "fp16", Step(QUANTIZE, {"precision": "fp16"})
    cal = quant.calibration
    params: dict[str, Any] = {"precision": "int8", "method": quant.method}
    if quant.method == "static" and cal is not None:
        params |= {"calibration": cal.uri, "samples": cal.samples, "calibrate": cal.method}
    return f"int8-{quant.method}", Step(QUANTIZE, params)


def _prune_steps(
    source: SourceSpec, spec: OptimizationSpec, notes: list[str]
) -> tuple[str, tuple[Step, ...]] | None:
    pruning = spec.pruning
    if pruning.method == "none":
        return None
    steps: list[Step] = [Step(PRUNE, {"method": pruning.method, "sparsity": pruning.sparsity})]
    recovery = spec.recovery
    if recovery.method != "none":
        if source.format == "torchscript":
            dataset = _training_dataset(spec, recovery.dataset, "recovery", notes)
            steps.append(
                Step(
                    RECOVER,
                    {
                        "method": recovery.method,
                        "epochs": recovery.epochs,
                        "learningRate": recovery.learning_rate,
                        "dataset": dataset,
                        "keepZeros": pruning.method in ("magnitude", "2:4"),
                        **_temperature(
                            spec, recovery.method == "distill" and spec.accuracy.metric == "top1"
                        ),
                    },
                )
            )
        else:
            notes.append(
                "recovery skipped: an ONNX source has no trainable module "
                "(use a torchscript source to fine-tune after pruning)"
            )
    return f"pruned-{pruning.method}", tuple(steps)


def _temperature(spec: OptimizationSpec, soft_logits: bool) -> dict[str, float]:
    """student.temperature, where a distillation matches softened logits (else it is moot)."""
    return {"temperature": spec.student.temperature} if soft_logits else {}


def _transformer_learning_rate(given: float, user_set: bool, notes: list[str]) -> float:
    if user_set:
        return given
    notes.append(
        f"transformer distillation uses learningRate {TRANSFORMER_LEARNING_RATE:g} "
        "(set it to override)"
    )
    return TRANSFORMER_LEARNING_RATE


def _transformer_prune_step(spec: OptimizationSpec, notes: list[str]) -> Step | None:
    """Heads and FFN neurons (pruning.attentionHeads / ffn shares of each layer, sparsity where
    unset), by importance on user data."""
    pruning = spec.pruning
    if pruning.method == "none":
        return None
    if pruning.method != "structured":
        notes.append(
            f"pruning.method {pruning.method} skipped: huggingface sources prune structured "
            "(attention heads and FFN neurons)"
        )
        return None
    dataset = _training_dataset(spec, spec.recovery.dataset, "pruning", notes)
    heads = pruning.sparsity if pruning.attention_heads is None else pruning.attention_heads
    ffn = pruning.sparsity if pruning.ffn is None else pruning.ffn
    params = {"heads": heads, "ffn": ffn, "dataset": dataset}
    return Step(PRUNE_TRANSFORMER, params)


def _distill_step(
    source: SourceSpec,
    spec: OptimizationSpec,
    epochs: int,
    rate: float,
    rate_set: bool,
    own: str | None,
    notes: list[str],
) -> Step:
    # Logits (the classification tasks) are softened; embeddings are matched by cosine.
    logits = (source.task or "feature-extraction") != "feature-extraction"
    return Step(
        DISTILL,
        {
            "epochs": epochs,
            "learningRate": _transformer_learning_rate(rate, rate_set, notes),
            "dataset": _training_dataset(spec, own, "distillation", notes),
            **_temperature(spec, logits),
        },
    )


def _transformer_prune_steps(
    source: SourceSpec, spec: OptimizationSpec, notes: list[str]
) -> tuple[str, tuple[Step, ...]] | None:
    prune = _transformer_prune_step(spec, notes)
    if prune is None:
        return None
    recovery = spec.recovery
    if recovery.method == "none":
        return "pruned-structured", (prune,)
    if recovery.method == "finetune":
        notes.append("transformer recovery distills from the original (finetune is not offered)")
    rate_set = "learning_rate" in recovery.model_fields_set
    distill = _distill_step(
        source, spec, recovery.epochs, recovery.learning_rate, rate_set, recovery.dataset, notes
    )
    return "pruned-structured", (prune, distill)


def _shallow_steps(
    source: SourceSpec, spec: OptimizationSpec, notes: list[str]
) -> tuple[str, tuple[Step, ...]]:
    """A shallow student: layers dropped, heads/FFN pruned too when pruning is structured."""
    student = spec.student
    steps = [Step(DROP_LAYERS, {"layers": student.layers})]
    name = "student-shallow"
    prune = _transformer_prune_step(spec, []) if source.format == "huggingface" else None
    if prune is not None:
        steps.append(prune)
        name = "student-shallow-pruned"
    rate_set = "learning_rate" in student.model_fields_set
    steps.append(
        _distill_step(
            source, spec, student.epochs, student.learning_rate, rate_set, student.dataset, notes
        )
    )
    return name, tuple(steps)


def _training_dataset(spec: OptimizationSpec, own: str | None, user: str, notes: list[str]) -> str:
    """``own`` dataset, else the calibration data, else (with a note) the accuracy dataset."""
    dataset = own or (spec.quantization.calibration.uri if spec.quantization.calibration else None)
    if dataset is None:
        dataset = spec.accuracy.dataset
        notes.append(
            f"{user} trains on the accuracy dataset (no {user}.dataset or "
            "calibration data): the gate is then optimistic"
        )
    return dataset


def narrow_student_steps(
    source: SourceSpec, spec: OptimizationSpec, notes: list[str]
) -> tuple[Step, ...]:
    """``student.method: narrow`` is a preset, not a pass of its own: structured pruning that
    keeps ``widthFactor`` of every hidden layer's channels (by L1 norm, so the student starts
    from the teacher's most important ones), then distillation from the teacher with the
    student's epochs, learning rate, temperature and dataset. Empty for an ONNX source, which
    has no trainable module (``optiserve validate`` refuses that spec)."""
    student = spec.student
    if source.format != "torchscript":
        notes.append("student.method narrow trains the student: it needs a torchscript source")
        return ()
    recover: dict[str, Any] = {
        "method": "distill",
        "epochs": student.epochs,
        "learningRate": student.learning_rate,
        "dataset": _training_dataset(spec, student.dataset, "student", notes),
        "keepZeros": False,
        # as a pruning candidate's distilling recover step: equal steps are tried once
        **_temperature(spec, spec.accuracy.metric == "top1"),
    }
    return (
        Step(PRUNE, {"method": "structured", "sparsity": round(1.0 - student.width_factor, 6)}),
        Step(RECOVER, recover),
    )


def _tensorrt_steps(spec: OptimizationSpec, notes: list[str]) -> tuple[str, str, tuple[Step, ...]]:
    """(name, precision, steps) of the TensorRT candidate."""
    trt = spec.tensorrt
    precision = spec.quantization.precision
    steps: list[Step] = []
    cal = spec.quantization.calibration
    if precision == "int8":
        if cal is None:
            # TensorRT 10 deprecated implicit (calibrator) INT8; explicit QDQ needs calibration.
            notes.append("TensorRT INT8 needs calibration data (explicit QDQ); building FP16")
            precision = "fp16"
        else:
            steps.append(
                Step(
                    QUANTIZE,
                    {
                        "precision": "int8",
                        "method": "static",
                        "calibration": cal.uri,
                        "samples": cal.samples,
                        "calibrate": cal.method,
                        # TensorRT takes only symmetric (zero-point 0) Q/DQ.
                        "symmetric": True,
                    },
                )
            )
    if precision == "fp16":
        # TensorRT 11 builds strongly typed networks: FP16 comes from an FP16 graph.
        steps.append(Step(QUANTIZE, {"precision": "fp16"}))
    if not trt.profiles:
        steps.append(Step(SHAPES, {"dataset": spec.accuracy.dataset}))
    params: dict[str, Any] = {
        "precision": precision,
        "sparseWeights": trt.sparse_weights,
        "workspaceMib": trt.workspace_mib,
        "timingCache": trt.timing_cache,
        "profiles": {k: v.model_dump(mode="json") for k, v in sorted(trt.profiles.items())},
    }
    steps.append(Step(TENSORRT, params))
    suffix = "-sparse" if trt.sparse_weights else ""
    return f"trt-{precision}{suffix}", precision, tuple(steps)


def build_plan(source: SourceSpec, spec: OptimizationSpec) -> Plan:
    """Every variant worth trying for ``spec``, baseline first."""
    notes: list[str] = []
    load = Step(LOAD_EXPORT, {"format": source.format, "sha256": source.sha256})
    # "extended" fuses into onnxruntime-only ops; "basic" keeps standard ops, which the
    # quantizers and TensorRT must still recognise, so it is used when a step follows.
    graph_opt = Step(GRAPH_OPT, {"device": spec.target.device, "level": "extended"})
    pre_graph_opt = Step(GRAPH_OPT, {"device": spec.target.device, "level": "basic"})
    base = (load, graph_opt)
    pre = (load, pre_graph_opt)
    candidates = [CandidatePlan("fp32", "fp32", base)]

    quant = _quantize_step(spec)
    transformer = source.format == "huggingface"
    prune = (_transformer_prune_steps if transformer else _prune_steps)(source, spec, notes)
    if quant is not None:
        candidates.append(CandidatePlan(quant[0], spec.quantization.precision, (*pre, quant[1])))
    if transformer:
        candidates += _fused_candidates(spec, load, quant)
    if prune is not None:
        candidates.append(CandidatePlan(prune[0], "fp32", (load, *prune[1], graph_opt)))
        if quant is not None:
            candidates.append(
                CandidatePlan(
                    f"{prune[0]}+{quant[0]}",
                    spec.quantization.precision,
                    (load, *prune[1], pre_graph_opt, quant[1]),
                )
            )
    name = f"student-{spec.student.method}"
    student_steps: tuple[Step, ...] = ()
    if spec.student.method == "shallow":
        name, student_steps = _shallow_steps(source, spec, notes)
    elif transformer and spec.student.method != "none":
        notes.append("student.method narrow is for TorchScript sources; use shallow")
    elif spec.student.method == "narrow":
        student_steps = narrow_student_steps(source, spec, notes)
        if prune is not None and student_steps == prune[1]:
            notes.append(
                f"student-narrow is {prune[0]} (the same pruning and distillation): tried once"
            )
            student_steps = ()
    if student_steps:
        candidates.append(CandidatePlan(name, "fp32", (load, *student_steps, graph_opt)))
        if quant is not None and spec.quantization.precision == "int8":
            candidates.append(
                CandidatePlan(
                    f"{name}+{quant[0]}",
                    spec.quantization.precision,
                    (load, *student_steps, pre_graph_opt, quant[1]),
                )
            )
    if spec.tensorrt.enabled:
        trt_name, precision, trt_steps = _tensorrt_steps(spec, notes)
        if spec.tensorrt.sparse_weights and prune is not None:
            candidates.append(
                CandidatePlan(
                    f"{prune[0]}+{trt_name}",
                    precision,
                    (load, *prune[1], pre_graph_opt, *trt_steps),
                )
            )
        else:
            candidates.append(CandidatePlan(trt_name, precision, (*pre, *trt_steps)))
    return Plan(tuple(candidates), tuple(dict.fromkeys(notes)))  # each note once


def _fused_candidates(
    spec: OptimizationSpec, load: Step, quant: tuple[str, Step] | None
) -> list[CandidatePlan]:
    """onnxruntime's transformer fusions (a huggingface source): the export fused, and fused
    then INT8 dynamic (the quantizer knows the fused Attention); measured, gated, chosen only
    when faster. Static QDQ and TensorRT need standard ops, so they take the unfused graph."""
    fuse = Step(FUSE_TRANSFORMER, {"device": spec.target.device})
    found = [CandidatePlan("fp32-fused", "fp32", (load, fuse))]
    if quant is not None and quant[0] == "int8-dynamic":
        found.append(CandidatePlan(f"{quant[0]}-fused", "int8", (load, fuse, quant[1])))
    return found


def describe_plan(plan: Plan) -> str:
    """One line per candidate: ``name: step -> step -> ...``."""
    lines = [f"{c.name}: " + " -> ".join(s.describe() for s in c.steps) for c in plan.candidates]
    return "\n".join([*lines, *(f"note: {n}" for n in plan.notes)])

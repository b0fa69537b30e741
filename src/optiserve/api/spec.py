"""``OptimizedModel.spec``: what the user asks for.

These models are the one source of truth: the CRD schema is generated from them
(``optiserve crd``), ``optiserve validate`` parses with them, and the optimizer and operator
read them. Field docstrings become the CRD's descriptions, so ``kubectl explain`` shows them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from optiserve.api import formats
from optiserve.api.base import INT32_MAX, ApiModel, object_default
from optiserve.api.pod import LabelValue, ResourceRequirements, Toleration, node_selector_rule
from optiserve.api.rules import CelRule

# The pod-level types live in api/pod.py; importing them from here keeps working.
__all__ = [
    "AccuracySpec",
    "BenchmarkSpec",
    "CalibrationSpec",
    "JobSpec",
    "LabelValue",
    "OptimizationSpec",
    "PruningSpec",
    "QuantizationSpec",
    "RecoverySpec",
    "ResourceRequirements",
    "ShapeProfile",
    "SourceSpec",
    "StudentSpec",
    "TargetSpec",
    "TensorRTSpec",
    "Toleration",
    "node_selector_rule",
]

SHA256_PATTERN = r"^[a-f0-9]{64}$"
URI_PATTERN = r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+|file://.+|https?://.+|s3://.+|/.+)$"
URI_HELP = "pvc://CLAIM/PATH (in the cluster), file:///PATH or /PATH (local), https://, s3://"


class SourceSpec(ApiModel):
    """Where the original model lives."""

    uri: str = Field(
        pattern=URI_PATTERN,
        description=f"The model file (a folder for huggingface): {URI_HELP}.",
    )
    format: Literal["onnx", "torchscript", "torch-export", "huggingface"] = Field(
        "onnx",
        description="onnx: used as given; torchscript: exported to ONNX first; torch-export: a "
        ".pt2 from torch.export.save (a dynamic batch axis), exported to ONNX first; "
        "huggingface: a save_pretrained folder (config.json, *.safetensors, tokenizer) of an "
        "encoder (BERT, RoBERTa, DistilBERT, MiniLM, XLM-R), exported to ONNX first.",
    )
    task: (
        Literal["feature-extraction", "sequence-classification", "token-classification"] | None
    ) = Field(
        None,
        description="huggingface only: the head served. feature-extraction (the default): "
        "mean pooling + L2 normalisation as sentence-transformers does; "
        "sequence-classification / token-classification: the checkpoint's classifier logits.",
    )
    sha256: str | None = Field(
        None,
        pattern=SHA256_PATTERN,
        description="Optional pin (a folder's: sha256 of its sorted 'name sha256' lines); "
        "a mismatch fails fast.",
    )

    rules = (
        CelRule(
            cel="self.format == 'huggingface' || !has(self.task)",
            message="task chooses the head of a huggingface source; set format: huggingface "
            "or remove task",
            field=".task",
            check=lambda s: s.format == "huggingface" or s.task is None,
        ),
    )


class TargetSpec(ApiModel):
    """The hardware the model is optimized for and served on."""

    device: Literal["cpu", "gpu"] = Field("cpu", description="cpu or gpu.")
    gpu_product: str | None = Field(
        None,
        max_length=128,
        description="Value of the node label nvidia.com/gpu.product; engines are built on it.",
    )

    rules = (
        CelRule(
            cel="self.device == 'gpu' || !has(self.gpuProduct)",
            message="gpuProduct is only meaningful with device: gpu",
            field=".gpuProduct",
            check=lambda t: t.device == "gpu" or t.gpu_product is None,
        ),
    )


class PruningSpec(ApiModel):
    """Remove weights the model does not need."""

    method: Literal["none", "magnitude", "structured", "2:4"] = Field(
        "none",
        description=(
            "magnitude: zero the smallest weights; structured: remove whole channels/neurons "
            "(smaller and faster anywhere); 2:4: two zeros in every four weights (sparse tensor "
            "cores on Ampere and later, through TensorRT)."
        ),
    )
    sparsity: float = Field(
        0.5, gt=0.0, lt=1.0, description="Fraction of weights (or channels) to remove."
    )
    attention_heads: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="structured, huggingface sources: share of each layer's attention heads "
        "removed (default: sparsity; 0 keeps them all).",
    )
    ffn: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="structured, huggingface sources: share of each layer's FFN (intermediate) "
        "neurons removed (default: sparsity; 0 keeps them all).",
    )

    rules = (
        CelRule(
            cel="self.method != '2:4' || self.sparsity == 0.5",
            message="2:4 pruning always removes half the weights; leave sparsity at 0.5",
            field=".sparsity",
            check=lambda p: p.method != "2:4" or p.sparsity == 0.5,
        ),
        CelRule(
            cel="self.method == 'structured' || (!has(self.attentionHeads) && !has(self.ffn))",
            message="attentionHeads and ffn are shares of structured pruning; set method: "
            "structured or remove them",
            field=".method",
            check=lambda p: (
                p.method == "structured" or (p.attention_heads is None and p.ffn is None)
            ),
        ),
        CelRule(
            cel="!has(self.attentionHeads) || !has(self.ffn) || self.attentionHeads > 0.0 || "
            "self.ffn > 0.0",
            message="attentionHeads and ffn are both 0: nothing would be pruned; set "
            "method: none or a share above 0",
            field=".ffn",
            check=lambda p: p.attention_heads != 0.0 or p.ffn != 0.0,
        ),
    )


class RecoverySpec(ApiModel):
    """Win back the accuracy pruning cost, by training on the original model's outputs."""

    method: Literal["none", "finetune", "distill"] = Field(
        "distill",
        description="distill: soft labels from the original as teacher; finetune: hard labels.",
    )
    epochs: int = Field(3, ge=1, le=1000, description="Passes over the training data.")
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0, description="Optimizer step size.")
    dataset: str | None = Field(
        None,
        pattern=URI_PATTERN,
        description=".npz of training inputs (labels optional); defaults to the calibration data.",
    )


class StudentSpec(ApiModel):
    """A smaller model trained to imitate the original (the teacher), tried as a candidate."""

    method: Literal["none", "narrow", "shallow"] = Field(
        "none",
        description="narrow (TorchScript sources): a preset of structured pruning keeping "
        "widthFactor of every hidden layer's channels/neurons, then distillation with these "
        "epochs, learningRate, temperature and dataset (tried once when pruning and recovery "
        "already ask for the same); shallow (huggingface sources): a transformer keeping "
        "`layers` of its layers, initialised from the teacher's; either trained on the "
        "teacher's outputs.",
    )
    layers: int | None = Field(
        None, ge=1, le=256, description="shallow: layers the student keeps (default: half)."
    )
    width_factor: float = Field(
        0.5, gt=0.0, lt=1.0, description="Fraction of each hidden layer's width the student keeps."
    )
    epochs: int = Field(10, ge=1, le=1000, description="Passes over the training data.")
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0, description="Optimizer step size.")
    temperature: float = Field(
        2.0,
        gt=0.0,
        le=100.0,
        description="Softens the teacher's logits in every distillation on a classifier's "
        "outputs: the student's, and recovery's (method: distill) after pruning.",
    )
    dataset: str | None = Field(
        None,
        pattern=URI_PATTERN,
        description=".npz of training inputs; defaults to the calibration data.",
    )


class CalibrationSpec(ApiModel):
    """Representative inputs for INT8 static quantization."""

    uri: str = Field(pattern=URI_PATTERN, description=f".npz keyed by input name: {URI_HELP}.")
    samples: int = Field(256, ge=1, le=1_000_000, description="How many samples to use.")
    method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="How activation ranges are chosen from the samples."
    )


class QuantizationSpec(ApiModel):
    """Lower the numeric precision."""

    precision: Literal["fp32", "fp16", "int8"] = Field("fp32", description="fp32, fp16 or int8.")
    method: Literal["dynamic", "static"] = Field(
        "dynamic",
        description="int8 only. dynamic: weights only; static: activations too, calibrated.",
    )
    calibration: CalibrationSpec | None = Field(None, description="Needed for int8 static.")

    rules = (
        CelRule(
            cel="self.precision != 'int8' || self.method != 'static' || has(self.calibration)",
            message="int8 static quantization needs calibration data: set calibration.uri",
            field=".calibration",
            check=lambda q: (
                not (q.precision == "int8" and q.method == "static" and q.calibration is None)
            ),
        ),
    )


MAX_RANK = 8
Dim = Annotated[int, Field(ge=1, le=INT32_MAX)]


def _ordered_dims_cel() -> str:
    # The API server's CEL has no indexed loop, so the check is unrolled up to MAX_RANK.
    per_dim = [
        f"(size(self.min) <= {i} || (self.min[{i}] <= self.opt[{i}] && "
        f"self.opt[{i}] <= self.max[{i}]))"
        for i in range(MAX_RANK)
    ]
    return "size(self.min) != size(self.opt) || size(self.opt) != size(self.max) || (" + (
        " && ".join(per_dim) + ")"
    )


class ShapeProfile(ApiModel):
    """One TensorRT optimization profile of a dynamic input (shapes include the batch)."""

    min: list[Dim] = Field(min_length=1, max_length=MAX_RANK, description="Smallest shape.")
    opt: list[Dim] = Field(min_length=1, max_length=MAX_RANK, description="Shape tuned for.")
    max: list[Dim] = Field(min_length=1, max_length=MAX_RANK, description="Largest shape.")

    rules = (
        CelRule(
            cel="size(self.min) == size(self.opt) && size(self.opt) == size(self.max)",
            message="min, opt and max must have the same rank",
            field=".opt",
            check=lambda p: len(p.min) == len(p.opt) == len(p.max),
        ),
        CelRule(
            cel=_ordered_dims_cel(),
            message="profile shapes need min <= opt <= max in every dimension",
            field=".max",
            check=lambda p: (
                len({len(p.min), len(p.opt), len(p.max)}) != 1
                or all(a <= b <= c for a, b, c in zip(p.min, p.opt, p.max, strict=True))
            ),
        ),
    )


class TensorRTSpec(ApiModel):
    """Build a TensorRT engine for the target GPU."""

    enabled: bool = Field(False, description="Build an engine (needs a gpu target).")
    profiles: dict[str, ShapeProfile] = Field(
        default_factory=dict,
        max_length=16,  # bounds the CEL cost estimate of the per-profile rules
        description="Per dynamic input; derived from the eval data when empty.",
    )
    sparse_weights: bool = Field(False, description="Use 2:4 sparse tensor cores.")
    workspace_mib: int = Field(4096, ge=64, le=1 << 20, description="Builder workspace limit.")
    timing_cache: bool = Field(True, description="Save and reuse the builder's timing cache.")


class AccuracySpec(ApiModel):
    """The gate every candidate must pass against the original model."""

    dataset: str = Field(
        pattern=URI_PATTERN, description=f".npz keyed by input name (+ labels): {URI_HELP}."
    )
    metric: Literal["top1", "cosine", "maxAbsError"] = Field(
        "top1",
        description=(
            "top1: classifiers (drop in top-1 accuracy); cosine: embeddings (1 - mean cosine "
            "similarity); maxAbsError: largest absolute difference of any output."
        ),
    )
    max_drop: float = Field(0.01, ge=0.0, le=1.0e6, description="Largest loss allowed.")


BatchSize = Annotated[int, Field(ge=1, le=65536)]


class BenchmarkSpec(ApiModel):
    """How candidates are timed: interleaved with the baselines, in rounds (optimizer/measure.py).

    A candidate wins only when it is faster than the others beyond the noise; among equally
    fast ones the more accurate, then the simpler, wins."""

    batch_sizes: list[BatchSize] = Field(
        default_factory=lambda: [1, 32],
        min_length=1,
        max_length=8,
        description="Latency is reported at the first, throughput at the largest.",
    )
    iterations: int = Field(
        50, ge=1, le=100_000, description="Timed runs per batch size, spread over the rounds."
    )
    warmup: int = Field(10, ge=0, le=10_000, description="Untimed runs first.")
    rounds: int = Field(
        5,
        ge=3,
        le=100,
        description="Rounds in which the baselines and every candidate are timed in turn; "
        "speedups are the median of per-round ratios, with their spread.",
    )


class JobSpec(ApiModel):
    """The optimization Job."""

    image: str | None = Field(
        None,
        max_length=formats.IMAGE_REFERENCE_MAX,
        pattern=formats.IMAGE_REFERENCE,
        description="Optimizer image; the operator's default if unset.",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="A gpu target gets nvidia.com/gpu: 1 unless set here.",
    )
    backoff_limit: int = Field(1, ge=0, le=10, description="Retries before the Job fails.")
    active_deadline_seconds: int = Field(
        3600, ge=60, le=INT32_MAX, description="Hard limit on the Job."
    )
    ttl_seconds_after_finished: int = Field(
        86400, ge=0, le=INT32_MAX, description="When the Job is removed."
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Node labels the Job's pod needs."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the Job's pod tolerates."
    )

    rules = (node_selector_rule("nodeSelector", "node_selector"),)


class OptimizationSpec(ApiModel):
    """What to try; every candidate is checked and timed, the fastest that passes wins."""

    target: TargetSpec = Field(default_factory=TargetSpec, json_schema_extra=object_default())
    pruning: PruningSpec = Field(default_factory=PruningSpec, json_schema_extra=object_default())
    recovery: RecoverySpec = Field(default_factory=RecoverySpec, json_schema_extra=object_default())
    student: StudentSpec = Field(default_factory=StudentSpec, json_schema_extra=object_default())
    quantization: QuantizationSpec = Field(
        default_factory=QuantizationSpec, json_schema_extra=object_default()
    )
    tensorrt: TensorRTSpec = Field(default_factory=TensorRTSpec, json_schema_extra=object_default())
    accuracy: AccuracySpec
    benchmark: BenchmarkSpec = Field(
        default_factory=BenchmarkSpec, json_schema_extra=object_default()
    )
    job: JobSpec = Field(default_factory=JobSpec, json_schema_extra=object_default())

    rules = (
        CelRule(
            cel="!has(self.tensorrt) || !self.tensorrt.enabled || "
            "(has(self.target) && self.target.device == 'gpu')",
            message="TensorRT needs a GPU: set target.device: gpu or tensorrt.enabled: false",
            field=".tensorrt.enabled",
            check=lambda o: not o.tensorrt.enabled or o.target.device == "gpu",
        ),
        CelRule(
            cel="!has(self.quantization) || self.quantization.precision != 'fp16' || "
            "(has(self.target) && self.target.device == 'gpu')",
            message="fp16 is only faster on a GPU: use int8 for cpu targets",
            field=".quantization.precision",
            check=lambda o: o.quantization.precision != "fp16" or o.target.device == "gpu",
        ),
        CelRule(
            cel="!has(self.tensorrt) || !self.tensorrt.sparseWeights || "
            "(has(self.pruning) && self.pruning.method == '2:4')",
            message="sparseWeights needs 2:4 pruning: set pruning.method: '2:4'",
            field=".tensorrt.sparseWeights",
            check=lambda o: not o.tensorrt.sparse_weights or o.pruning.method == "2:4",
        ),
        CelRule(
            cel="!has(self.pruning) || self.pruning.method != '2:4' || "
            "(has(self.target) && self.target.device == 'gpu')",
            message="2:4 sparsity only speeds up GPU sparse tensor cores: set target.device: gpu "
            "or use pruning.method: structured on cpu",
            field=".pruning.method",
            check=lambda o: o.pruning.method != "2:4" or o.target.device == "gpu",
        ),
    )

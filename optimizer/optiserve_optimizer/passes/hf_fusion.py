"""onnxruntime's transformer fusions (``onnxruntime.transformers.optimizer``) for encoder
candidates: the decomposed attention, LayerNorm (with its residual Add: SkipLayerNormalization),
GELU (with its bias: BiasGelu / FastGelu) and the embeddings become onnxruntime's fused contrib
ops, which its CPU and CUDA kernels run as one each (and whose MatMuls the INT8 dynamic
quantizer still finds, Attention included).

Only onnxruntime runs the result, as with the ``extended`` graph optimization. Head count and
hidden size come from the candidate's transformer twin (``config.json`` + ``shapes.json``), so
a candidate whose heads were pruned fuses with its own head count (the exporter's dynamic
reshapes hide them from the fusion's own detection). The fused graph is compared with its
input on eval samples of mixed lengths (the mask is what attention fusion most easily gets
wrong); a difference beyond the tolerance fails this candidate, and the gate then judges it
like any other (the padded-batch check included).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import onnx

from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import PassFailedError, short_cause
from optiserve_optimizer.onnx_utils import compare_outputs, session
from optiserve_optimizer.passes import hf_model
from optiserve_optimizer.settings import PassConfig, TransformerFusionSettings

NAME = "fuse_transformer"
TOLERANCE = 1e-3  # relative to the output scale, as for graph_opt
FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)
SAMPLE_ROWS = 8


def fused_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts = Counter(node.op_type for node in model.graph.node)
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def attention_shape(artifact: ModelArtifact) -> tuple[int, int]:
    """(heads per layer, model hidden size) of the candidate's twin."""
    if not hf_model.is_twin(artifact.torch):
        raise PassFailedError(
            NAME, "transformer fusion needs a huggingface source (source.format: huggingface)"
        )
    assert artifact.torch is not None
    folder = artifact.torch.parent
    config = json.loads((folder / "config.json").read_text())
    layers = json.loads((folder / hf_model.SHAPES).read_text())["layers"]
    heads = {int(layer["heads"]) for layer in layers}
    if len(heads) != 1:
        raise PassFailedError(NAME, f"layers have different head counts {sorted(heads)}")
    hidden = config.get("hidden_size", config.get("dim"))  # DistilBERT: dim
    if not isinstance(hidden, int):
        raise PassFailedError(NAME, f"{folder.name}/config.json names no hidden size")
    count = heads.pop()
    if hidden % count:
        # onnxruntime's BERT fusion asserts this (it splits the model width into heads).
        raise PassFailedError(
            NAME,
            f"onnxruntime's attention fusion needs the hidden size ({hidden}) divisible by the "
            f"head count ({count}); prune heads to a divisor to fuse",
        )
    return count, hidden


class TransformerFusion:
    name = NAME
    settings_type = TransformerFusionSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        from onnxruntime.transformers.optimizer import optimize_model

        settings = TransformerFusionSettings.of(config, NAME)
        heads, hidden = attention_shape(artifact)
        out = ctx.output(artifact, "fused.onnx")
        # The fusion scripts log every pattern they try at INFO.
        logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
        try:
            fused: Any = optimize_model(
                str(artifact.onnx),
                model_type="bert",  # BERT, RoBERTa, DistilBERT, XLM-R: the same encoder block
                num_heads=heads,
                hidden_size=hidden,
                opt_level=0,  # fusions only; onnxruntime's own passes run at session time
                use_gpu=settings.device == "gpu",
            )
        except Exception as exc:  # the fusion scripts raise many types on an unexpected graph
            raise PassFailedError(NAME, f"transformer fusion failed: {short_cause(exc)}") from exc
        fused.save_model_to_file(str(out))
        counts = fused_counts(onnx.load(str(out)))
        before_counts = fused_counts(onnx.load(str(artifact.onnx)))
        if counts.get("Attention", 0) + counts.get("MultiHeadAttention", 0) == 0:
            raise PassFailedError(
                NAME, f"no attention was fused (found {counts or 'no fused op'}): nothing to gain"
            )
        before = session(artifact.onnx, level="disable")
        feed = ctx.sample_feed([i.name for i in before.get_inputs()], rows=SAMPLE_ROWS)
        diff = compare_outputs(before.run(None, feed), session(out).run(None, feed))
        if diff > TOLERANCE:
            raise PassFailedError(
                NAME, f"the fused graph differs from its input by {diff:.3g} (> {TOLERANCE})"
            )
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, onnx=out),
            {
                "maxRelDiff": diff,
                "fused": counts,
                "fusedBefore": before_counts,
                "bytes": out.stat().st_size,
            },
        )

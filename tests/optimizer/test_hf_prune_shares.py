"""``pruning.attentionHeads`` / ``pruning.ffn``: separate shares of a transformer's heads and FFN
neurons (``sparsity`` where unset), through the spec to a physically smaller model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import numpy_helper

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve.validate import validate_object
from optiserve_optimizer.artifact import PassContext
from optiserve_optimizer.plan import PRUNE_TRANSFORMER, build_plan
from optiserve_optimizer.progress import Progress
from tests.optimizer import hf_encoders

HF = SourceSpec(uri="/m/encoder", format="huggingface")


def prune_params(pruning: dict[str, Any]) -> dict[str, Any]:
    spec = OptimizationSpec.model_validate(
        {"accuracy": {"dataset": "/d/eval.npz"}, "pruning": pruning, "recovery": {"method": "none"}}
    )
    steps = [s for c in build_plan(HF, spec).candidates for s in c.steps]
    (step,) = [s for s in steps if s.name == PRUNE_TRANSFORMER]
    return dict(step.params)


def test_shares_default_to_sparsity_and_are_set_apart() -> None:
    structured = {"method": "structured", "sparsity": 0.3}
    assert prune_params(structured)["heads"] == prune_params(structured)["ffn"] == 0.3
    both = prune_params({**structured, "attentionHeads": 0.25, "ffn": 0.75})
    assert (both["heads"], both["ffn"]) == (0.25, 0.75)
    heads_kept = prune_params({**structured, "attentionHeads": 0.0})
    assert (heads_kept["heads"], heads_kept["ffn"]) == (0.0, 0.3)


def test_a_huggingface_spec_with_shares_is_valid() -> None:
    obj = {
        "apiVersion": "optiserve.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": "m"},
        "spec": {
            "source": {"uri": "pvc://models/enc/", "format": "huggingface"},
            "optimization": {
                "accuracy": {"dataset": "pvc://models/eval.npz"},
                "pruning": {"method": "structured", "attentionHeads": 0.25, "ffn": 0.5},
            },
            "storage": {"pvc": "model-store"},
        },
    }
    model, problems = validate_object(obj, "t")
    assert problems == [] and model is not None
    assert model.spec.optimization.pruning.attention_heads == 0.25


@pytest.mark.models
def test_tiny_bert_loses_the_head_and_ffn_shares_asked_for(tmp_path: Path) -> None:
    from optiserve_optimizer.passes.hf_compress import PruneTransformer
    from optiserve_optimizer.passes.load_export import LoadExport

    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    calib = hf_encoders.save_text_npz(tmp_path / "calib.npz", 16, seed=2)
    spec = OptimizationSpec.model_validate(
        {
            "accuracy": {"dataset": str(eval_npz), "metric": "cosine"},
            "benchmark": {"batchSizes": [1, 8]},
            "quantization": {"precision": "int8", "calibration": {"uri": str(calib)}},
            "pruning": {"method": "structured", "attentionHeads": 0.25, "ffn": 0.75},
            "recovery": {"method": "none"},
        }
    )
    source = SourceSpec(uri=str(folder), format="huggingface")
    (candidate,) = [c for c in build_plan(source, spec).candidates if c.name == "pruned-structured"]
    (step,) = [s for s in candidate.steps if s.name == PRUNE_TRANSFORMER]
    ctx = PassContext(source, spec, tmp_path / "work", Progress())
    ctx.original = LoadExport().run(None, {}, ctx).artifact
    ctx.step_label = step.describe()
    result = PruneTransformer().run(ctx.original, step.params, ctx)
    assert (result.metrics["heads"], result.metrics["ffn"]) == ("4->3", "128->32")
    before, after = matrix_shapes(ctx.original.onnx), matrix_shapes(result.artifact.onnx)
    hidden, size = hf_encoders.TINY["hidden"], hf_encoders.TINY["hidden"] // 4
    layers = hf_encoders.TINY["layers"]
    # Per layer: query, key, value ([hidden, 3 heads x size]) and the attention output
    # ([3 x size, hidden]); the FFN's two matrices with 32 neurons (the exporter may store a
    # Linear's weight either way round).
    assert count(after, hidden, 3 * size) == 4 * layers
    assert count(after, hidden, 32) == 2 * layers
    assert count(after, hidden, hf_encoders.TINY["ffn"]) == 0
    assert count(before, hidden, 4 * size) == 4 * layers  # 4 heads before
    assert count(before, hidden, hf_encoders.TINY["ffn"]) == 2 * layers


def matrix_shapes(path: Path) -> dict[tuple[int, ...], int]:
    """How many 2-D weights of each shape the ONNX model holds."""
    found: dict[tuple[int, ...], int] = {}
    for init in onnx.load(str(path)).graph.initializer:
        value = numpy_helper.to_array(init)
        if value.ndim == 2:
            found[value.shape] = found.get(value.shape, 0) + 1
    return found


def count(shapes: dict[tuple[int, ...], int], a: int, b: int) -> int:
    """Matrices [a, b] or [b, a]."""
    return shapes.get((a, b), 0) + (shapes.get((b, a), 0) if a != b else 0)

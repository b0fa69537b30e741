"""Planning for huggingface sources (pure: no torch), and the compression passes' refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from optiserve.api import OptimizationSpec, ServingSpec, SourceSpec
from optiserve.digest import spec_recipe_digest
from optiserve_optimizer.artifact import ModelArtifact, PassContext
from optiserve_optimizer.errors import PassFailedError, SettingsError
from optiserve_optimizer.passes.hf_compress import (
    DISTILL_NAME,
    PRUNE_NAME,
    DropLayers,
    kept_layers,
)
from optiserve_optimizer.plan import DISTILL, DROP_LAYERS, PRUNE_TRANSFORMER, build_plan
from optiserve_optimizer.progress import Progress
from optiserve_optimizer.settings import DistillSettings, PruneTransformerSettings

HF = SourceSpec(uri="/m/encoder", format="huggingface")
INT8 = {"precision": "int8", "method": "dynamic", "calibration": {"uri": "/d/cal.npz"}}


def optimization(**fields: Any) -> OptimizationSpec:
    return OptimizationSpec.model_validate({"accuracy": {"dataset": "/d/eval.npz"}, **fields})


def candidate(plan: Any, name: str) -> Any:
    (found,) = [c for c in plan.candidates if c.name == name]
    return found


def steps(plan: Any, name: str) -> list[str]:
    (candidate,) = [c for c in plan.candidates if c.name == name]
    return [s.name for s in candidate.steps]


def test_structured_pruning_of_a_transformer_prunes_heads_and_ffn_then_distills() -> None:
    plan = build_plan(
        HF, optimization(pruning={"method": "structured", "sparsity": 0.3}, quantization=INT8)
    )
    assert plan.names() == [
        "fp32",
        "int8-dynamic",
        "fp32-fused",
        "int8-dynamic-fused",
        "pruned-structured",
        "pruned-structured+int8-dynamic",
    ]
    assert steps(plan, "pruned-structured+int8-dynamic")[:3] == [
        "load_export",
        PRUNE_TRANSFORMER,
        DISTILL,
    ]
    pruned = candidate(plan, "pruned-structured")
    prune = pruned.steps[1].params
    assert prune["heads"] == prune["ffn"] == 0.3 and prune["dataset"] == "/d/cal.npz"
    distill = pruned.steps[2].params
    assert distill["learningRate"] == 1e-4  # unset: the transformer default, with a note
    assert any("learningRate 0.0001" in n for n in plan.notes)


def test_a_learning_rate_the_user_set_is_kept() -> None:
    plan = build_plan(
        HF,
        optimization(
            pruning={"method": "structured"}, recovery={"learningRate": 3e-5, "dataset": "/d/r.npz"}
        ),
    )
    distill = candidate(plan, "pruned-structured").steps[2].params
    assert distill["learningRate"] == 3e-5
    assert distill["dataset"] == "/d/r.npz"


def test_shallow_student_drops_layers_and_prunes_when_pruning_is_structured() -> None:
    spec = optimization(
        pruning={"method": "structured"},
        student={"method": "shallow", "layers": 3},
        quantization=INT8,
    )
    plan = build_plan(HF, spec)
    assert steps(plan, "student-shallow-pruned+int8-dynamic")[:4] == [
        "load_export",
        DROP_LAYERS,
        PRUNE_TRANSFORMER,
        DISTILL,
    ]
    only_layers = build_plan(HF, optimization(student={"method": "shallow"}))
    assert only_layers.names() == ["fp32", "fp32-fused", "student-shallow"]
    assert candidate(only_layers, "student-shallow").steps[1].params == {"layers": None}


def test_methods_that_do_not_fit_a_transformer_are_noted_not_planned() -> None:
    plan = build_plan(
        HF, optimization(pruning={"method": "magnitude"}, student={"method": "narrow"})
    )
    assert plan.names() == ["fp32", "fp32-fused"]
    assert any("huggingface sources prune structured" in n for n in plan.notes)
    assert any("narrow is for TorchScript" in n for n in plan.notes)


def test_prune_config_and_layer_choice() -> None:
    with pytest.raises(SettingsError, match=r"\[prune_transformer\].*heads: Input should be less"):
        PruneTransformerSettings.of({"heads": 1.0, "ffn": 0.5, "dataset": "/d"}, PRUNE_NAME)
    with pytest.raises(SettingsError, match="nothing to prune"):
        PruneTransformerSettings.of({"heads": 0.0, "ffn": 0.0, "dataset": "/d"}, PRUNE_NAME)
    with pytest.raises(SettingsError, match=r"\[distill\].*temprature: Extra inputs"):
        DistillSettings.of(
            {"epochs": 1, "learningRate": 1e-4, "dataset": "/d", "temprature": 2}, DISTILL_NAME
        )
    assert kept_layers(6, 3) == [0, 2, 5]  # evenly spaced, first and last kept
    assert kept_layers(12, 4) == [0, 4, 7, 11]
    assert kept_layers(6, 1) == [5]


def test_shallow_student_of_a_non_transformer_fails_naming_the_cause(tmp_path: Path) -> None:
    ctx = PassContext(SourceSpec(uri="/m.onnx"), optimization(), tmp_path, Progress())
    artifact = ModelArtifact(onnx=tmp_path / "m.onnx")
    with pytest.raises(PassFailedError, match="needs a huggingface source"):
        DropLayers().run(artifact, {"layers": 1}, ctx)


def test_the_task_is_part_of_the_recipe_digest() -> None:
    spec, serving = optimization(), ServingSpec()
    digests = {
        spec_recipe_digest(
            "m", SourceSpec(uri="/m/enc", format="huggingface", task=task), spec, serving
        )
        for task in (None, "feature-extraction", "token-classification")
    }
    assert len(digests) == 3

"""Integration on the example models: the digits CNN (TorchScript) and MiniLM (ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import yaml
from onnx import numpy_helper

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve_optimizer.artifact import PassContext
from optiserve_optimizer.passes import prune_graph, prune_math
from optiserve_optimizer.passes.load_export import LoadExport
from optiserve_optimizer.passes.pruning import Prune
from optiserve_optimizer.passes.recovery import Recover
from optiserve_optimizer.passes.shapes import Shapes
from optiserve_optimizer.progress import Progress
from tests.optimizer.runs import QUICK_BENCHMARK, OptimizerRunner

pytestmark = pytest.mark.models


def digits_context(files: Any, tmp_path: Path) -> PassContext:
    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(files.eval)}})
    return PassContext(
        SourceSpec(uri=str(files.model), format="torchscript"), spec, tmp_path / "work", Progress()
    )


def weights(path: Path) -> tuple[onnx.ModelProto, dict[str, Any]]:
    model = onnx.load(str(path))
    return model, {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_torchscript_export_has_a_dynamic_batch(digits_files: Any, tmp_path: Path) -> None:
    ctx = digits_context(digits_files, tmp_path)
    result = LoadExport().run(None, {}, ctx)
    model = onnx.load(str(result.artifact.onnx))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
    assert result.metrics["maxRelDiff"] < 1e-3


def test_two_four_survives_recovery_in_the_exported_weights(
    digits_files: Any, tmp_path: Path
) -> None:
    ctx = digits_context(digits_files, tmp_path)
    ctx.original = LoadExport().run(None, {}, ctx).artifact
    pruned = Prune().run(ctx.original, {"method": "2:4"}, ctx).artifact
    ctx.step_label = "recover"
    recovered = (
        Recover()
        .run(
            pruned,
            {
                "method": "distill",
                "epochs": 1,
                "learningRate": 1e-3,
                "dataset": str(digits_files.train),
                "keepZeros": True,
            },
            ctx,
        )
        .artifact
    )
    model, inits = weights(recovered.onnx)
    checked = 0
    for ref in prune_graph.weight_refs(model):
        if prune_math.supports_two_four(inits[ref.name], ref.input_axis):
            assert prune_math.is_two_four(inits[ref.name], ref.input_axis), ref.name
            checked += 1
    assert checked == 3  # conv2, fc1, fc2 (conv1 has one input channel: not 4-divisible)


def test_structured_pruning_removes_channels_from_the_torch_module(
    digits_files: Any, tmp_path: Path
) -> None:
    ctx = digits_context(digits_files, tmp_path)
    original = LoadExport().run(None, {}, ctx).artifact
    result = Prune().run(original, {"method": "structured", "sparsity": 0.5}, ctx)
    _, before = weights(original.onnx)
    _, after = weights(result.artifact.onnx)
    assert after["conv1.weight"].shape[0] == before["conv1.weight"].shape[0] // 2
    assert after["conv2.weight"].shape[:2] == (
        before["conv2.weight"].shape[0] // 2,
        before["conv1.weight"].shape[0] // 2,
    )
    assert after["fc1.weight"].shape[1] == before["fc1.weight"].shape[1] // 2
    assert after["fc2.weight"].shape == (10, before["fc2.weight"].shape[1] // 2)  # classes stay
    assert result.artifact.onnx.stat().st_size < 0.4 * original.onnx.stat().st_size
    assert result.artifact.torch is not None


def test_digits_pipeline_chooses_a_passing_candidate(
    digits_files: Any, tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    spec = tmp_path / "digits.yaml"  # a whole OptimizedModel, as `optiserve optimize` reads it
    spec.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "optiserve.io/v1alpha1",
                "kind": "OptimizedModel",
                "metadata": {"name": "digits"},
                "spec": {
                    "source": {"uri": str(digits_files.model), "format": "torchscript"},
                    "optimization": {
                        "pruning": {"method": "structured", "sparsity": 0.5},
                        "recovery": {"method": "distill", "epochs": 2},
                        "quantization": {
                            "precision": "int8",
                            "method": "static",
                            "calibration": {"uri": str(digits_files.train), "samples": 64},
                        },
                        "accuracy": {
                            "dataset": str(digits_files.eval),
                            "metric": "top1",
                            "maxDrop": 0.02,
                        },
                        "benchmark": {"batchSizes": [1, 32], "iterations": 5, "warmup": 1},
                    },
                    "storage": {"pvc": "models"},
                },
            }
        )
    )
    report = optimizer.run(spec).report
    assert report["baseline"]["runtime"] == "pytorch-torchscript"
    details = report["candidateDetails"]["pruned-structured+int8-static"]
    assert details["passes"]["recover"]["lossLast"] < details["passes"]["recover"]["lossFirst"]
    assert details["passes"]["prune"]["paramsAfter"] < details["passes"]["prune"]["paramsBefore"]
    chosen = next(c for c in report["candidates"] if c["chosen"])
    assert chosen["passed"] and chosen["accuracyDrop"] <= 0.02


def test_minilm_int8_keeps_the_embeddings(minilm_files: Any, optimizer: OptimizerRunner) -> None:
    report = optimizer.optimize(
        "minilm",
        {"uri": str(minilm_files.model), "format": "onnx"},
        {
            "quantization": {"precision": "int8", "method": "dynamic"},
            "accuracy": {"dataset": str(minilm_files.eval), "metric": "cosine", "maxDrop": 0.01},
            "benchmark": QUICK_BENCHMARK,
        },
    ).report
    int8 = report["candidateDetails"]["int8-dynamic"]
    assert int8["accuracy"]["meanCosine"] >= 0.99
    sizes = {c["name"]: c["sizeBytes"] for c in report["candidates"]}
    assert sizes["fp32"] / sizes["int8-dynamic"] >= 3.5
    # The real MiniLM reads its attention mask: padded and alone agree, source and candidates.
    padded = {c["subject"]: c for c in report["checks"] if c["name"] == "padded-batch"}
    assert set(padded) == {"source", "fp32", "int8-dynamic"}
    assert padded["source"]["result"] == "passed"
    assert padded["source"]["numbers"]["worstMaxAbsError"] < 1e-4
    assert len(set(padded["source"]["numbers"]["lengths"])) > 1
    assert padded["int8-dynamic"]["numbers"]["selfDrop"] > 0  # reported, not gated


def test_minilm_shapes_are_derived_from_the_attention_mask(
    minilm_files: Any, tmp_path: Path
) -> None:
    from optiserve_optimizer.artifact import ModelArtifact

    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(minilm_files.eval)}})
    ctx = PassContext(SourceSpec(uri=str(minilm_files.model)), spec, tmp_path, Progress())
    result = Shapes().run(ModelArtifact(onnx=minilm_files.model), {}, ctx)
    profile = result.metrics["profiles"]["input_ids"]
    assert profile["min"][0] == 1 and profile["max"][0] == 32
    assert 1 <= profile["min"][1] <= profile["opt"][1] <= profile["max"][1] <= 32
    assert 0.0 < result.metrics["paddingSaved"] < 1.0

"""onnxruntime's transformer fusions and static INT8 as gated candidates of huggingface sources:
planned, fused for real (Attention, SkipLayerNormalization, BiasGelu in the graph), right on a
padded batch, still right after heads were pruned, and INT8 on top."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve_optimizer.artifact import PassContext
from optiserve_optimizer.main import run_optimize
from optiserve_optimizer.onnx_utils import session
from optiserve_optimizer.passes import hf_source
from optiserve_optimizer.plan import FUSE_TRANSFORMER, build_plan
from optiserve_optimizer.progress import Progress
from tests.optimizer import hf_encoders

HF = SourceSpec(uri="/m/encoder", format="huggingface")


def optimization(**fields: Any) -> OptimizationSpec:
    return OptimizationSpec.model_validate({"accuracy": {"dataset": "/d/eval.npz"}, **fields})


def test_fused_candidates_are_planned_for_huggingface_sources_only() -> None:
    dynamic = optimization(quantization={"precision": "int8", "method": "dynamic"})
    plan = build_plan(HF, dynamic)
    assert plan.names() == ["fp32", "int8-dynamic", "fp32-fused", "int8-dynamic-fused"]
    fused = next(c for c in plan.candidates if c.name == "int8-dynamic-fused")
    assert [s.name for s in fused.steps] == ["load_export", FUSE_TRANSFORMER, "quantize"]
    static = optimization(
        quantization={"precision": "int8", "method": "static", "calibration": {"uri": "/d/c.npz"}}
    )
    # Static QDQ needs standard ops: it takes the unfused graph, no fused INT8 twin.
    assert build_plan(HF, static).names() == ["fp32", "int8-static", "fp32-fused"]
    onnx_source = SourceSpec(uri="/m/model.onnx", format="onnx")
    assert build_plan(onnx_source, dynamic).names() == ["fp32", "int8-dynamic"]


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.models
def test_fusion_fuses_attention_and_agrees_on_a_padded_batch_also_after_head_pruning(
    tmp_path: Path,
) -> None:
    from optiserve_optimizer.passes.hf_compress import PruneTransformer
    from optiserve_optimizer.passes.hf_fusion import TransformerFusion
    from optiserve_optimizer.passes.load_export import LoadExport
    from optiserve_optimizer.passes.quantize import Quantize

    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    spec = OptimizationSpec.model_validate(
        {"accuracy": {"dataset": str(eval_npz)}, "benchmark": {"batchSizes": [1, 8]}}
    )
    source = SourceSpec(uri=str(folder), format="huggingface")
    ctx = PassContext(source, spec, tmp_path / "work", Progress())
    original = LoadExport().run(None, {}, ctx).artifact
    ctx.original = original
    with np.load(eval_npz) as npz:
        padded = hf_source.padded_batch({k: npz[k] for k in npz.files}, pad_id=0)
    assert len(set(padded["attention_mask"].sum(axis=1))) > 1  # mixed real lengths

    def agree(path: Path, reference: Path) -> float:
        want = session(reference, level="disable").run(None, padded)[0]
        got = session(path).run(None, padded)[0]
        return float(np.abs(got - want).max())

    ctx.step_label = "fuse"
    fused = TransformerFusion().run(original, {"device": "cpu"}, ctx)
    layers = hf_encoders.TINY["layers"]
    assert fused.metrics["fused"]["Attention"] == layers
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= op_types(fused.artifact.onnx)
    assert "Softmax" not in op_types(fused.artifact.onnx)  # attention is one op now
    assert agree(fused.artifact.onnx, original.onnx) < 1e-4

    ctx.step_label = "prune"
    calib = hf_encoders.save_text_npz(tmp_path / "calib.npz", 16, seed=2)
    config = {"heads": 0.5, "ffn": 0.5, "dataset": str(calib)}
    pruned = PruneTransformer().run(original, config, ctx).artifact
    ctx.step_label = "prune+fuse"
    pruned_fused = TransformerFusion().run(pruned, {"device": "cpu"}, ctx)
    assert pruned_fused.metrics["fused"]["Attention"] == layers  # with 2 heads, not 4
    assert agree(pruned_fused.artifact.onnx, pruned.onnx) < 1e-4

    ctx.step_label = "fuse+int8"
    int8 = Quantize().run(fused.artifact, {"precision": "int8", "method": "dynamic"}, ctx)
    assert "Attention" in int8.metrics["ops"]
    assert int8.artifact.onnx.stat().st_size < 0.5 * fused.artifact.onnx.stat().st_size


@pytest.mark.models
def test_fused_and_static_int8_candidates_are_gated_in_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("OPTISERVE_TERMINATION_LOG", str(termination))
    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert")
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    calib = hf_encoders.save_text_npz(tmp_path / "calib.npz", 32, seed=2)
    doc = {
        "name": "tiny",
        "source": {"uri": str(folder), "format": "huggingface"},
        "optimization": {
            "accuracy": {"dataset": str(eval_npz), "metric": "cosine", "maxDrop": 0.05},
            "benchmark": {"batchSizes": [1, 8], "iterations": 2, "warmup": 1},
            "quantization": {
                "precision": "int8",
                "method": "static",
                "calibration": {"uri": str(calib), "samples": 32},
            },
        },
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert run_optimize(spec, tmp_path / "out") == 0
    report = json.loads(
        (Path(json.loads(termination.read_text())["folder"]) / "report.json").read_text()
    )
    rows = {c["name"]: c for c in report["candidates"]}
    assert list(rows) == ["fp32", "int8-static", "fp32-fused"]
    details = report["candidateDetails"]
    assert details["fp32-fused"]["passes"]["fuse_transformer"]["fused"]["Attention"] == 2
    checks = {(c["name"], c["subject"]): c for c in report["checks"]}
    for name in rows:  # each gated, the padded batch included
        assert details[name]["accuracy"]["metric"] == "cosine"
        assert rows[name]["passed"] == (rows[name]["accuracyDrop"] <= 0.05)
        assert ("padded-batch", name) in checks
    assert rows["fp32-fused"]["passed"] and rows["fp32-fused"]["accuracyDrop"] < 1e-4
    assert details["int8-static"]["passes"]["quantize"]["method"] == "static"
    assert rows["int8-static"]["sizeBytes"] < rows["fp32"]["sizeBytes"]


def test_a_head_count_that_does_not_divide_the_width_is_refused_by_name(tmp_path: Path) -> None:
    """onnxruntime's fusion asserts hidden % heads == 0 (MiniLM with 9 of 12 heads left):
    the candidate fails with that cause, not with a bare AssertionError."""
    from optiserve_optimizer.artifact import ModelArtifact
    from optiserve_optimizer.errors import PassFailedError
    from optiserve_optimizer.passes import hf_model
    from optiserve_optimizer.passes.hf_fusion import attention_shape

    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "config.json").write_text(json.dumps({"hidden_size": 384}))
    (twin / hf_model.WEIGHTS).write_bytes(b"")
    layers = [{"heads": 12, "ffn": 1536}] * 2
    (twin / hf_model.SHAPES).write_text(json.dumps({"layers": layers}))
    artifact = ModelArtifact(onnx=tmp_path / "m.onnx", torch=twin / hf_model.WEIGHTS)
    assert attention_shape(artifact) == (12, 384)
    (twin / hf_model.SHAPES).write_text(json.dumps({"layers": [{"heads": 9, "ffn": 768}] * 2}))
    with pytest.raises(PassFailedError, match=r"hidden size \(384\) divisible by the head count"):
        attention_shape(artifact)
    with pytest.raises(PassFailedError, match="needs a huggingface source"):
        attention_shape(ModelArtifact(onnx=tmp_path / "m.onnx"))

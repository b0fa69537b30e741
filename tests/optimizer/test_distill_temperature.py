"""``student.temperature`` reaches every distillation on softened logits (the CNN's narrow
student, a preset of structured pruning + a distilling recover step, recovery itself, a
transformer's distill step) and changes what the student learns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve_optimizer.artifact import PassContext
from optiserve_optimizer.plan import DISTILL, RECOVER, build_plan
from optiserve_optimizer.progress import Progress
from tests.optimizer import hf_encoders

TS = SourceSpec(uri="/m/model.pt", format="torchscript")


def optimization(metric: str, **fields: Any) -> OptimizationSpec:
    accuracy = {"dataset": "/d/eval.npz", "metric": metric}
    return OptimizationSpec.model_validate({"accuracy": accuracy, **fields})


def step_params(plan: Any, name: str) -> list[dict[str, Any]]:
    return [dict(s.params) for c in plan.candidates for s in c.steps if s.name == name]


def test_the_plan_passes_student_temperature_where_logits_are_softened() -> None:
    pruning: dict[str, Any] = {
        "pruning": {"method": "structured"},
        "student": {"temperature": 5.0},
    }
    (recover,) = step_params(build_plan(TS, optimization("top1", **pruning)), RECOVER)
    assert recover["temperature"] == 5.0
    # mean squared error on a non-classifier: a temperature would change nothing
    (recover,) = step_params(build_plan(TS, optimization("cosine", **pruning)), RECOVER)
    assert "temperature" not in recover
    narrow: dict[str, Any] = {"student": {"method": "narrow", "temperature": 3.0}}
    recovers = step_params(build_plan(TS, optimization("top1", **narrow)), RECOVER)
    assert recovers and all(r["temperature"] == 3.0 for r in recovers)
    shallow: dict[str, Any] = {"student": {"method": "shallow", "layers": 1, "temperature": 4.0}}
    classifier = SourceSpec(uri="/m/enc", format="huggingface", task="sequence-classification")
    (distill,) = step_params(build_plan(classifier, optimization("top1", **shallow)), DISTILL)
    assert distill["temperature"] == 4.0
    embeddings = SourceSpec(uri="/m/enc", format="huggingface")
    (distill,) = step_params(build_plan(embeddings, optimization("cosine", **shallow)), DISTILL)
    assert "temperature" not in distill  # 1 - cosine has no temperature


def weights(path: Path) -> dict[str, Any]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def largest_weight_difference(a: Path, b: Path) -> float:
    left, right = weights(a), weights(b)
    return max(float(np.abs(left[k] - right[k]).max()) for k in left if k in right)


@pytest.mark.models
def test_distilling_recovery_learns_differently_at_another_temperature(
    digits_files: Any, tmp_path: Path
) -> None:
    from optiserve_optimizer.passes.load_export import LoadExport
    from optiserve_optimizer.passes.pruning import Prune
    from optiserve_optimizer.passes.recovery import Recover

    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(digits_files.eval)}})
    source = SourceSpec(uri=str(digits_files.model), format="torchscript")
    ctx = PassContext(source, spec, tmp_path / "work", Progress())
    teacher = LoadExport().run(None, {}, ctx).artifact
    ctx.original = teacher
    pruned = Prune().run(teacher, {"method": "structured", "sparsity": 0.5}, ctx).artifact
    train = str(digits_files.train)
    recovered = []
    for run, temperature in enumerate((1.0, 1.0, 8.0)):  # the repeat: training is seeded
        ctx.step_label = f"recover-{run}"
        config = {"method": "distill", "epochs": 1, "temperature": temperature, "dataset": train}
        result = Recover().run(pruned, config, ctx)
        recovered.append((result.artifact.onnx, result.metrics["lossFirst"]))
    (cold, cold_loss), (again, _), (hot, hot_loss) = recovered
    assert largest_weight_difference(cold, again) == 0.0
    assert cold_loss != pytest.approx(hot_loss, rel=1e-3)
    assert largest_weight_difference(cold, hot) > 1e-4  # other gradients, other weights


@pytest.mark.models
def test_transformer_distillation_learns_differently_at_another_temperature(
    tmp_path: Path,
) -> None:
    from optiserve_optimizer.passes.hf_compress import DISTILL_NAME, Distill, DropLayers
    from optiserve_optimizer.passes.load_export import LoadExport

    task = "sequence-classification"
    folder = hf_encoders.save_encoder(tmp_path / "bert", "bert", task)
    eval_npz = hf_encoders.save_text_npz(tmp_path / "eval.npz", 16, seed=1)
    train = hf_encoders.save_text_npz(tmp_path / "train.npz", 32, seed=2)
    spec = OptimizationSpec.model_validate(
        {
            "accuracy": {"dataset": str(eval_npz), "metric": "cosine"},
            "benchmark": {"batchSizes": [1, 8]},
        }
    )
    source = SourceSpec(uri=str(folder), format="huggingface", task=task)
    ctx = PassContext(source, spec, tmp_path / "work", Progress())
    ctx.original = LoadExport().run(None, {}, ctx).artifact
    ctx.step_label = "drop"
    shallow = DropLayers().run(ctx.original, {"layers": 1}, ctx).artifact
    runs = []
    for run, temperature in enumerate((1.0, 1.0, 8.0)):  # the repeat: training is seeded
        ctx.step_label = f"{DISTILL_NAME}-{run}"
        config = {"epochs": 1, "learningRate": 1e-3, "dataset": str(train)}
        result = Distill().run(shallow, {**config, "temperature": temperature}, ctx)
        runs.append((result.artifact.onnx, result.metrics["lossFirst"]))
    (cold, cold_loss), (again, _), (hot, hot_loss) = runs
    assert largest_weight_difference(cold, again) == 0.0
    assert cold_loss != pytest.approx(hot_loss, rel=1e-3)
    assert largest_weight_difference(cold, hot) > 1e-5

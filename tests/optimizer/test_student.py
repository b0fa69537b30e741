"""Distillation into a narrower student: the plan (pure) and the pass on the digits CNN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve_optimizer.artifact import ModelArtifact, PassContext
from optiserve_optimizer.errors import PassFailedError
from optiserve_optimizer.plan import GRAPH_OPT, QUANTIZE, STUDENT, build_plan
from optiserve_optimizer.progress import Progress

TS = SourceSpec(uri="/m/model.pt", format="torchscript")
STATIC = {"precision": "int8", "method": "static", "calibration": {"uri": "/d/cal.npz"}}
NARROW = {"method": "narrow", "widthFactor": 0.5, "epochs": 3}


def optimization(**fields: Any) -> OptimizationSpec:
    return OptimizationSpec.model_validate({"accuracy": {"dataset": "/d/eval.npz"}, **fields})


def test_student_candidates_appear_only_when_asked_for() -> None:
    assert not any("student" in n for n in build_plan(TS, optimization()).names())
    assert build_plan(TS, optimization(student=NARROW)).names() == ["fp32", "student-narrow"]
    plan = build_plan(TS, optimization(student=NARROW, quantization=STATIC))
    assert plan.names() == ["fp32", "int8-static", "student-narrow", "student-narrow+int8-static"]
    fp32_student, int8_student = plan.candidates[2], plan.candidates[3]
    assert [s.name for s in fp32_student.steps] == ["load_export", STUDENT, GRAPH_OPT]
    assert [s.name for s in int8_student.steps] == ["load_export", STUDENT, GRAPH_OPT, QUANTIZE]
    assert int8_student.precision == "int8"
    # Both share the student step, so the pipeline trains the student once.
    assert fp32_student.steps[1] == int8_student.steps[1]
    params = fp32_student.steps[1].params
    assert params["widthFactor"] == 0.5 and params["epochs"] == 3
    assert params["dataset"] == "/d/cal.npz"  # the calibration data by default


def test_student_without_training_data_uses_the_eval_set_and_says_so() -> None:
    plan = build_plan(TS, optimization(student=NARROW))
    assert plan.candidates[1].steps[1].params["dataset"] == "/d/eval.npz"
    assert any("student trains on the accuracy dataset" in n for n in plan.notes)
    own = build_plan(TS, optimization(student={**NARROW, "dataset": "/d/train.npz"}))
    assert own.candidates[1].steps[1].params["dataset"] == "/d/train.npz"
    assert not own.notes


def test_onnx_source_is_a_typed_error_naming_the_cause(tmp_path: Path) -> None:
    from optiserve_optimizer.passes.student import Student
    from tests.optimizer.conftest import make_mlp, make_npz

    model = make_mlp(tmp_path / "mlp.onnx")
    ctx = PassContext(
        SourceSpec(uri=str(model), format="onnx"),
        optimization(),
        tmp_path / "work",
        Progress(),
    )
    artifact = ModelArtifact(onnx=model)
    config = {**NARROW, "learningRate": 1e-3, "dataset": str(make_npz(tmp_path / "d.npz", 8))}
    with pytest.raises(PassFailedError, match="narrow needs a TorchScript source") as caught:
        Student().run(artifact, config, ctx)
    assert "student" in str(caught.value)


def top1(path: Path, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits: np.ndarray[Any, Any] = session.run(None, {name: x})[0]
    predicted: np.ndarray[Any, Any] = logits.argmax(axis=1)
    return predicted


@pytest.mark.models
def test_narrow_student_is_smaller_and_learns_from_the_teacher(
    digits_files: Any, tmp_path: Path
) -> None:
    from optiserve_optimizer.passes.load_export import LoadExport
    from optiserve_optimizer.passes.student import Student

    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(digits_files.eval)}})
    source = SourceSpec(uri=str(digits_files.model), format="torchscript")
    ctx = PassContext(source, spec, tmp_path / "work", Progress())
    teacher = LoadExport().run(None, {}, ctx).artifact
    ctx.original = teacher
    ctx.step_label = "student"
    config = {**NARROW, "learningRate": 1e-3, "temperature": 2.0}
    result = Student().run(teacher, {**config, "dataset": str(digits_files.train)}, ctx)
    student, metrics = result.artifact, result.metrics

    def weights(path: Path) -> dict[str, Any]:
        model = onnx.load(str(path))
        return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    before, after = weights(teacher.onnx), weights(student.onnx)
    for hidden in ("conv2.weight", "fc1.weight"):  # both sides narrowed: factor² of the weights
        assert after[hidden].size == before[hidden].size // 4, hidden
    assert after["conv1.weight"].shape[1] == 1  # the input layer keeps its input
    assert after["fc2.weight"].shape[0] == 10  # and the output layer its classes
    assert metrics["paramsAfter"] < 0.3 * metrics["paramsBefore"]
    assert student.onnx.stat().st_size < 0.4 * teacher.onnx.stat().st_size
    assert metrics["epochs"] == 3 and metrics["lossLast"] < metrics["lossFirst"]
    # Training, not just the L1 initialisation, makes the student imitate the teacher.
    assert metrics["agreementAfter"] >= 0.95
    assert metrics["agreementAfter"] > metrics["agreementBefore"] + 0.02

    with np.load(digits_files.eval) as arrays:
        x, labels = arrays["input"], arrays["labels"]
    teacher_acc = float((top1(teacher.onnx, x) == labels).mean())
    student_acc = float((top1(student.onnx, x) == labels).mean())
    assert student_acc >= teacher_acc - 0.05, (student_acc, teacher_acc)

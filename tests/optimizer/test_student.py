"""``student.method: narrow`` is a preset of structured pruning + distillation: the plan
(pure) expands it to exactly those passes, and on the digits CNN they train a narrower model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve_optimizer.artifact import PassContext
from optiserve_optimizer.plan import (
    GRAPH_OPT,
    LOAD_EXPORT,
    PRUNE,
    QUANTIZE,
    RECOVER,
    Step,
    build_plan,
    narrow_student_steps,
)
from optiserve_optimizer.progress import Progress
from optiserve_optimizer.registry import pass_for

TS = SourceSpec(uri="/m/model.pt", format="torchscript")
STATIC = {"precision": "int8", "method": "static", "calibration": {"uri": "/d/cal.npz"}}
NARROW = {"method": "narrow", "widthFactor": 0.5, "epochs": 3}


def optimization(**fields: Any) -> OptimizationSpec:
    return OptimizationSpec.model_validate({"accuracy": {"dataset": "/d/eval.npz"}, **fields})


def test_narrow_expands_to_exactly_structured_pruning_and_distillation() -> None:
    spec = optimization(student={**NARROW, "widthFactor": 0.75, "temperature": 4.0})
    assert narrow_student_steps(TS, spec, []) == (
        Step(PRUNE, {"method": "structured", "sparsity": 0.25}),
        Step(
            RECOVER,
            {
                "method": "distill",
                "epochs": 3,
                "learningRate": 1e-3,
                "dataset": "/d/eval.npz",
                "keepZeros": False,
                "temperature": 4.0,
            },
        ),
    )


def test_student_candidates_appear_only_when_asked_for() -> None:
    assert not any("student" in n for n in build_plan(TS, optimization()).names())
    assert build_plan(TS, optimization(student=NARROW)).names() == ["fp32", "student-narrow"]
    plan = build_plan(TS, optimization(student=NARROW, quantization=STATIC))
    assert plan.names() == ["fp32", "int8-static", "student-narrow", "student-narrow+int8-static"]
    fp32_student, int8_student = plan.candidates[2], plan.candidates[3]
    assert [s.name for s in fp32_student.steps] == [LOAD_EXPORT, PRUNE, RECOVER, GRAPH_OPT]
    assert [s.name for s in int8_student.steps] == [
        LOAD_EXPORT,
        PRUNE,
        RECOVER,
        GRAPH_OPT,
        QUANTIZE,
    ]
    assert int8_student.precision == "int8"
    # Both share the pruning and distillation steps, so the pipeline trains the student once.
    assert fp32_student.steps[1:3] == int8_student.steps[1:3]
    params = fp32_student.steps[2].params
    assert params["epochs"] == 3 and params["dataset"] == "/d/cal.npz"  # calibration by default


def test_a_student_equal_to_the_pruned_candidate_is_tried_once() -> None:
    same = optimization(
        pruning={"method": "structured", "sparsity": 0.5},
        recovery={"method": "distill", "epochs": 3},
        student=NARROW,
    )
    plan = build_plan(TS, same)
    assert plan.names() == ["fp32", "pruned-structured"]
    assert any("student-narrow is pruned-structured" in n for n in plan.notes)
    other = optimization(pruning={"method": "structured", "sparsity": 0.25}, student=NARROW)
    assert build_plan(TS, other).names() == ["fp32", "pruned-structured", "student-narrow"]


def test_student_without_training_data_uses_the_eval_set_and_says_so() -> None:
    plan = build_plan(TS, optimization(student=NARROW))
    assert plan.candidates[1].steps[2].params["dataset"] == "/d/eval.npz"
    assert any("student trains on the accuracy dataset" in n for n in plan.notes)
    own = build_plan(TS, optimization(student={**NARROW, "dataset": "/d/train.npz"}))
    assert own.candidates[1].steps[2].params["dataset"] == "/d/train.npz"
    assert not own.notes


def test_an_onnx_source_gets_no_student_and_a_note() -> None:
    plan = build_plan(SourceSpec(uri="/m/model.onnx"), optimization(student=NARROW))
    assert plan.names() == ["fp32"]
    assert any("narrow trains the student" in n for n in plan.notes)


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
    spec = OptimizationSpec.model_validate(
        {"accuracy": {"dataset": str(digits_files.eval)}, "student": NARROW}
    )
    spec = spec.model_copy(
        update={"student": spec.student.model_copy(update={"dataset": str(digits_files.train)})}
    )
    source = SourceSpec(uri=str(digits_files.model), format="torchscript")
    ctx = PassContext(source, spec, tmp_path / "work", Progress())
    teacher = pass_for(LOAD_EXPORT).run(None, {}, ctx).artifact
    ctx.original = teacher
    student, metrics = teacher, {}
    for step in narrow_student_steps(source, spec, []):  # what the pipeline runs
        ctx.step_label = step.describe()
        result = pass_for(step.name).run(student, step.params, ctx)
        student, metrics[step.name] = result.artifact, result.metrics

    def weights(path: Path) -> dict[str, Any]:
        model = onnx.load(str(path))
        return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    before, after = weights(teacher.onnx), weights(student.onnx)
    for hidden in ("conv2.weight", "fc1.weight"):  # both sides narrowed: factor² of the weights
        assert after[hidden].size == before[hidden].size // 4, hidden
    assert after["conv1.weight"].shape[1] == 1  # the input layer keeps its input
    assert after["fc2.weight"].shape[0] == 10  # and the output layer its classes
    assert metrics[PRUNE]["paramsAfter"] < 0.3 * metrics[PRUNE]["paramsBefore"]
    assert student.onnx.stat().st_size < 0.4 * teacher.onnx.stat().st_size
    recover = metrics[RECOVER]
    assert recover["epochs"] == 3 and recover["lossLast"] < recover["lossFirst"]

    with np.load(digits_files.eval) as arrays:
        x, labels = arrays["input"], arrays["labels"]
    teacher_acc = float((top1(teacher.onnx, x) == labels).mean())
    student_acc = float((top1(student.onnx, x) == labels).mean())
    assert student_acc >= teacher_acc - 0.05, (student_acc, teacher_acc)

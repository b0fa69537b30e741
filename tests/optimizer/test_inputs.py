"""Inputs bound by name, refused up front when they do not fit, and the correctness checks,
end to end on small TorchScript models (see ``input_models``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.optimizer import input_models
from tests.optimizer.conftest import make_mlp, make_npz
from tests.optimizer.runs import QUICK_BENCHMARK, OptimizerRunner

pytestmark = pytest.mark.models


def spec_file(
    optimizer: OptimizerRunner,
    model: Path,
    eval_npz: Path,
    metric: str = "top1",
    source_format: str = "torchscript",
    max_drop: float = 0.01,
    **passes: Any,
) -> Path:
    return optimizer.write_spec(
        "m",
        {"uri": str(model), "format": source_format},
        {
            "accuracy": {"dataset": str(eval_npz), "metric": metric, "maxDrop": max_drop},
            "benchmark": QUICK_BENCHMARK,
            **passes,
        },
    )


def served(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / "model_repository" / "m" / "1" / "model.onnx"))


def steps_run(progress: str) -> list[str]:
    """The passes the progress lines show (``[  1.0s] candidate  pass  FAILED|0.12s ...``)."""
    step = re.compile(r"^\[\s*[\d.]+s\] \S+\s+(\S+)\s+(?:FAILED after|[\d.]+s )")
    return [m.group(1) for m in map(step.match, progress.splitlines()) if m]


def test_two_inputs_stored_in_the_other_order_are_packaged_right(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model, eval_npz = input_models.two_input(tmp_path)
    with np.load(eval_npz) as stored:
        assert stored.files[:2] == ["b", "a"]  # the order that used to swap them
        arrays = {k: stored[k] for k in stored.files}
    run = optimizer.run(spec_file(optimizer, model, eval_npz))
    folder = run.folder
    session = served(folder)
    assert [i.name for i in session.get_inputs()] == ["a", "b"]  # forward(a, b)
    (logits,) = session.run(None, {"a": arrays["a"], "b": arrays["b"]})
    assert float((logits.argmax(axis=1) == arrays["labels"]).mean()) == 1.0
    config = (folder / "model_repository" / "m" / "config.pbtxt").read_text()
    assert config.index('name: "a"') < config.index('name: "b"')
    report = run.report
    binding = next(c for c in report["checks"] if c["name"] == "input-binding")
    assert binding["numbers"]["inputs"] == ["a", "b"] and binding["result"] == "passed"


def test_tokenizer_ordered_bert_returns_the_right_outputs(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model, eval_npz = input_models.tiny_bert(tmp_path, expected=True)
    with np.load(eval_npz) as stored:
        assert stored.files[:3] == ["input_ids", "token_type_ids", "attention_mask"]
        arrays = {k: stored[k] for k in stored.files}
    run = optimizer.run(spec_file(optimizer, model, eval_npz, metric="cosine"))
    folder = run.folder
    session = served(folder)
    assert [i.name for i in session.get_inputs()] == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
    ]
    feed = {k: v for k, v in arrays.items() if k != "expected"}
    (got,) = session.run(None, feed)
    cosine = (got * arrays["expected"]).sum(axis=1)
    assert cosine.min() > 0.9999
    report = run.report
    results = {(c["name"], c["subject"]): c["result"] for c in report["checks"]}
    assert results[("reference-outputs", "source")] == "passed"
    assert results[("padded-batch", "source")] == "passed"
    assert results[("padded-batch", "fp32")] == "passed"
    padded = next(c for c in report["checks"] if c["name"] == "padded-batch")
    assert len(set(padded["numbers"]["lengths"])) > 1  # a mixed-length batch really ran


def test_a_mask_dropping_source_disagrees_with_the_references(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model, eval_npz = input_models.tiny_bert(tmp_path, use_mask=False, expected=True)
    error = optimizer.run(spec_file(optimizer, model, eval_npz, metric="cosine"), expect=2).error
    assert error["type"] == "CorrectnessError"
    message = error["message"]
    assert "source model disagrees with the reference outputs (output)" in message
    assert "cosine drop" in message and "mean cosine 0." in message
    assert "'attention_mask'" in message  # the padded batch names the ignored input too
    assert not optimizer.out.exists() or list(optimizer.out.iterdir()) == []


def test_the_padded_batch_check_catches_a_mask_ignoring_model(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model, eval_npz = input_models.tiny_bert(tmp_path, use_mask=False)
    message = optimizer.run(spec_file(optimizer, model, eval_npz, metric="cosine"), expect=2).error[
        "message"
    ]
    assert "answers differently inside a padded batch than alone" in message
    assert "worst sample" in message and "max |difference|" in message
    assert "does it ignore 'attention_mask'?" in message


def test_a_wrong_dtype_is_refused_before_any_pass_with_its_cause(
    tmp_path: Path, optimizer: OptimizerRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    model, eval_npz = input_models.two_input(tmp_path)
    with np.load(eval_npz) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays["b"] = arrays["b"].astype(np.float64)
    np.savez(eval_npz, **arrays)
    error = optimizer.run(spec_file(optimizer, model, eval_npz), expect=2).error
    assert error["pass"] == "accuracy" and error["type"] == "DataError"
    message = error["message"]
    assert "two.npz['b'] is float64 but the model's weights are float32" in message
    assert "same dtype" in message  # torch's own cause, without its TorchScript traceback
    assert "Traceback" not in message and "\n" not in message
    assert steps_run(capsys.readouterr().err) == ["load_export"]  # refused while loading


def test_a_calibration_set_missing_an_input_is_refused_before_any_pass(
    tmp_path: Path, optimizer: OptimizerRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    model, eval_npz = input_models.two_input(tmp_path)
    calibration = tmp_path / "cal.npz"
    with np.load(eval_npz) as stored:
        np.savez(calibration, a=stored["a"], c=stored["b"])
    spec = spec_file(
        optimizer,
        model,
        eval_npz,
        quantization={
            "precision": "int8",
            "method": "static",
            "calibration": {"uri": str(calibration)},
        },
    )
    error = optimizer.run(spec, expect=2).error
    assert error["pass"] == "quantize" and error["type"] == "DataError"
    assert "cal.npz has no array 'b' for the model input 'b'" in error["message"]
    assert steps_run(capsys.readouterr().err) == ["load_export"]


def test_an_unknown_array_in_the_eval_set_is_refused(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    eval_npz = make_npz(tmp_path / "eval.npz", 16)
    with np.load(eval_npz) as stored:
        np.savez(eval_npz, input=stored["input"], inputs_mask=stored["input"])
    spec = spec_file(optimizer, model, eval_npz, metric="maxAbsError", source_format="onnx")
    message = optimizer.run(spec, expect=2).error["message"]
    assert "eval.npz holds array(s) ['inputs_mask'] that are no input of the model" in message


def test_references_are_checked_for_onnx_sources_and_gate_candidates(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model = make_mlp(tmp_path / "mlp.onnx", sizes=(16, 64, 10))
    eval_npz = make_npz(tmp_path / "eval.npz", 32)
    with np.load(eval_npz) as stored:
        x = stored["input"]
    (right,) = ort.InferenceSession(str(model)).run(None, {"input": x})
    output = ort.InferenceSession(str(model)).get_outputs()[0].name
    np.savez(eval_npz, input=x, **{f"expected_{output}": right})
    spec = spec_file(
        optimizer,
        model,
        eval_npz,
        metric="maxAbsError",
        source_format="onnx",
        max_drop=1e-4,  # the source passes, INT8 cannot
        quantization={"precision": "int8", "method": "dynamic"},
    )
    report = optimizer.run(spec).report
    by_subject = {c["subject"]: c for c in report["checks"] if c["name"] == "reference-outputs"}
    assert by_subject["source"]["result"] == "passed"
    assert by_subject["int8-dynamic"]["result"] == "failed"
    assert by_subject["int8-dynamic"]["numbers"]["drop"] > 1e-4
    assert report["chosen"] == "fp32"
    details = report["candidateDetails"]["int8-dynamic"]["accuracy"]
    assert details["referenceDrop"] == by_subject["int8-dynamic"]["numbers"]["drop"]


def test_a_reference_for_an_unknown_output_is_refused(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model, eval_npz = input_models.two_input(tmp_path)
    with np.load(eval_npz) as stored:
        arrays = {k: stored[k] for k in stored.files}
    np.savez(eval_npz, **arrays, expected_logits=np.zeros((len(arrays["a"]), 5), np.float32))
    message = optimizer.run(spec_file(optimizer, model, eval_npz), expect=2).error["message"]
    assert "two.npz['expected_logits'] is a reference for output 'logits'" in message
    assert "its outputs: output" in message


def test_an_input_the_model_never_reads_stays_an_input_of_the_served_model(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model, eval_npz = input_models.unused_input(tmp_path)
    spec = spec_file(
        optimizer, model, eval_npz, quantization={"precision": "int8", "method": "dynamic"}
    )
    run = optimizer.run(spec)
    summary, folder = run.summary, run.folder
    assert [c["name"] for c in summary["candidates"]] == ["fp32", "int8-dynamic"]
    assert [i.name for i in served(folder).get_inputs()] == ["x", "unused"]
    config = (folder / "model_repository" / "m" / "config.pbtxt").read_text()
    assert 'name: "unused"' in config


def test_pruning_and_distillation_bind_the_training_data_by_name(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model, eval_npz, train_npz = input_models.two_input_hidden(tmp_path)
    spec = spec_file(
        optimizer,
        model,
        eval_npz,
        pruning={"method": "structured", "sparsity": 0.5},
        recovery={"method": "distill", "epochs": 3, "dataset": str(train_npz)},
    )
    report = optimizer.run(spec).report
    pruned = report["candidateDetails"]["pruned-structured"]
    assert [s.split("(")[0] for s in pruned["steps"]][:3] == ["load_export", "prune", "recover"]
    recover = pruned["passes"]["recover"]
    assert recover["lossLast"] < recover["lossFirst"]
    assert pruned["accuracy"]["top1"] >= 0.9  # against labels from forward(a=..., b=...)
    binding = next(c for c in report["checks"] if c["name"] == "input-binding")
    assert binding["numbers"]["samples"] == {"eval.npz": 128, "train.npz": 128}

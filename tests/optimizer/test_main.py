"""The entry point on a small real ONNX model: success, reuse, and every bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper

from optiserve_optimizer.artifact import file_sha256
from tests.optimizer.conftest import make_mlp, make_npz
from tests.optimizer.runs import OptimizerRunner


def write_spec(optimizer: OptimizerRunner, model: Path, eval_npz: Path, **passes: Any) -> Path:
    return optimizer.write_spec(
        "mlp",
        {"uri": str(model), "format": "onnx"},
        {
            "accuracy": {"dataset": str(eval_npz), "metric": "maxAbsError", "maxDrop": 0.5},
            "benchmark": {"batchSizes": [1, 8], "iterations": 3, "warmup": 1},
            **passes,
        },
    )


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == []


def test_success_packages_a_triton_repository_and_reuses_it(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    model = make_mlp(tmp_path / "mlp.onnx", sizes=(16, 128, 64, 10))
    eval_npz = make_npz(tmp_path / "eval.npz", 32)
    spec = write_spec(
        optimizer,
        model,
        eval_npz,
        quantization={"precision": "int8", "method": "dynamic"},
        pruning={"method": "structured", "sparsity": 0.25},
    )
    first = optimizer.run(spec)
    summary, folder, report = first.summary, first.folder, first.report
    assert summary["ok"] is True and summary["reused"] is False
    assert len(first.termination_text.encode()) < 4096
    assert [c["name"] for c in report["candidates"]] == [
        "fp32",
        "int8-dynamic",
        "pruned-structured",
        "pruned-structured+int8-dynamic",
    ]
    chosen = [c for c in report["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["passed"] and report["chosen"] == chosen[0]["name"]
    assert report["baseline"]["runtime"] == "onnxruntime-fp32"
    assert report["baseline"]["beside"] == {}  # an ONNX source is its own onnxruntime baseline
    metrics = report["metrics"]
    assert metrics["baseline"] == "onnxruntime-fp32" and metrics["speedup"].endswith("x")
    low, high = (float(x.rstrip("x")) for x in metrics["speedupRange"].split("-"))
    assert low <= float(metrics["speedup"].rstrip("x")) <= high
    measured = metrics["measured"]
    assert measured["threads"] == 1 and measured["rounds"] == 5 and measured["batch"] == 8
    assert measured["clock"] == "cpu"  # one thread: CPU time, which the load does not inflate
    assert measured["cpu"] and measured["logicalCpus"] >= 1
    assert report["measurement"]["rounds"] == 5
    timed = [c for c in report["candidates"] if "throughput" in c]
    assert len(timed) == 4 and all(c["speedup"].endswith(")") for c in timed)
    assert summary["metrics"]["baseline"] == "onnxruntime-fp32"
    assert report["digests"]["source"] == file_sha256(model)
    served = folder / "model_repository" / "mlp" / "1" / "model.onnx"
    assert report["digests"]["model"] == file_sha256(served)
    assert 'name: "mlp"' in (folder / "model_repository" / "mlp" / "config.pbtxt").read_text()
    assert "onnxruntime" in report["tools"]
    assert sorted(p.name for p in first.out.iterdir()) == [summary["digest"]]  # no temp left

    again = optimizer.run(spec).summary
    assert again["reused"] is True and again["digest"] == summary["digest"]


def test_missing_model(tmp_path: Path, optimizer: OptimizerRunner) -> None:
    eval_npz = make_npz(tmp_path / "eval.npz", 32)
    spec = write_spec(optimizer, tmp_path / "absent.onnx", eval_npz)
    error = optimizer.run(spec, expect=2).error
    assert error["pass"] == "load_export" and "does not exist" in error["message"]
    assert_nothing_written(optimizer.out)


def test_corrupt_model(tmp_path: Path, optimizer: OptimizerRunner) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    spec = write_spec(optimizer, bad, make_npz(tmp_path / "eval.npz", 32))
    error = optimizer.run(spec, expect=2).error
    assert error["pass"] == "load_export" and "not a valid ONNX model" in error["message"]
    assert_nothing_written(optimizer.out)


def test_sha256_mismatch(tmp_path: Path, optimizer: OptimizerRunner) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    spec = write_spec(optimizer, model, make_npz(tmp_path / "eval.npz", 32))
    doc = yaml.safe_load(spec.read_text())
    doc["source"]["sha256"] = "0" * 64
    spec.write_text(yaml.safe_dump(doc))
    error = optimizer.run(spec, expect=2).error
    assert error["type"] == "DigestMismatchError" and "pins " + "0" * 64 in error["message"]
    assert_nothing_written(optimizer.out)


def test_calibration_of_the_wrong_shape(tmp_path: Path, optimizer: OptimizerRunner) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    cal = make_npz(tmp_path / "cal.npz", 32, features=12)
    spec = write_spec(
        optimizer,
        model,
        make_npz(tmp_path / "eval.npz", 32),
        quantization={"precision": "int8", "method": "static", "calibration": {"uri": str(cal)}},
    )
    error = optimizer.run(spec, expect=2).error
    assert error["pass"] == "quantize" and "sample shape [12]" in error["message"]
    assert_nothing_written(optimizer.out)


def test_a_candidate_whose_pass_cannot_apply_fails_alone(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["input"], ["out"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "sigmoid.onnx"))
    spec = write_spec(
        optimizer,
        tmp_path / "sigmoid.onnx",
        make_npz(tmp_path / "eval.npz", 32),
        quantization={"precision": "int8", "method": "dynamic"},
    )
    report = optimizer.run(spec).report
    rows = {c["name"]: c for c in report["candidates"]}
    int8 = rows["int8-dynamic"]
    assert int8["failed"] and not int8["passed"] and not int8["chosen"]
    assert "Sigmoid" in int8["reason"] and int8["reason"].startswith("failed in quantize(")
    assert "throughput" not in int8  # never timed
    assert report["chosen"] == "fp32" and rows["fp32"]["chosen"]
    assert report["candidateDetails"]["int8-dynamic"]["failedStep"].startswith("quantize(")
    assert report["metrics"]["baseline"] == "onnxruntime-fp32"


def test_eval_set_smaller_than_the_batch(tmp_path: Path, optimizer: OptimizerRunner) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    spec = write_spec(optimizer, model, make_npz(tmp_path / "eval.npz", 5))
    error = optimizer.run(spec, expect=2).error
    assert error["pass"] == "accuracy" and "fewer than the batch size 8" in error["message"]
    assert_nothing_written(optimizer.out)


def test_invalid_spec(tmp_path: Path, optimizer: OptimizerRunner) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "source": {"uri": "relative/path.onnx"},
                "optimization": {"accuracy": {"dataset": "/x.npz"}},
            }
        )
    )
    assert optimizer.run(spec, expect=2).error["pass"] == "spec"
    optimizer.run(tmp_path / "absent.yaml", expect=2)


def test_eval_data_of_the_wrong_dtype(tmp_path: Path, optimizer: OptimizerRunner) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    spec = write_spec(optimizer, model, make_npz(tmp_path / "eval.npz", 32, dtype=np.float16))
    assert "float16" in optimizer.run(spec, expect=2).error["message"]

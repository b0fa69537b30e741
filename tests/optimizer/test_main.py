"""The entry point on a small real ONNX model: success, reuse, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from optiserve_optimizer.artifact import file_sha256
from optiserve_optimizer.main import run_optimize
from tests.optimizer.conftest import make_mlp, make_npz


@pytest.fixture
def termination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "termination-log"
    monkeypatch.setenv("OPTISERVE_TERMINATION_LOG", str(path))
    return path


def write_spec(tmp_path: Path, model: Path, eval_npz: Path, **optimization: Any) -> Path:
    doc = {
        "name": "mlp",
        "source": {"uri": str(model), "format": "onnx"},
        "optimization": {
            "accuracy": {"dataset": str(eval_npz), "metric": "maxAbsError", "maxDrop": 0.5},
            "benchmark": {"batchSizes": [1, 8], "iterations": 3, "warmup": 1},
            **optimization,
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or list(out.iterdir()) == []


def failure(termination: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(termination.read_text())
    assert summary["ok"] is False
    error: dict[str, Any] = summary["error"]
    return error


def test_success_packages_a_triton_repository_and_reuses_it(
    tmp_path: Path, termination: Path
) -> None:
    model = make_mlp(tmp_path / "mlp.onnx", sizes=(16, 128, 64, 10))
    eval_npz = make_npz(tmp_path / "eval.npz", 32)
    spec = write_spec(
        tmp_path,
        model,
        eval_npz,
        quantization={"precision": "int8", "method": "dynamic"},
        pruning={"method": "structured", "sparsity": 0.25},
    )
    out = tmp_path / "out"
    assert run_optimize(spec, out) == 0
    summary = json.loads(termination.read_text())
    assert summary["ok"] is True and summary["reused"] is False
    assert len(termination.read_bytes()) < 4096
    folder = out / summary["digest"]
    report = json.loads((folder / "report.json").read_text())
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
    assert sorted(p.name for p in out.iterdir()) == [summary["digest"]]  # no temp left over

    assert run_optimize(spec, out) == 0
    again = json.loads(termination.read_text())
    assert again["reused"] is True and again["digest"] == summary["digest"]


def test_missing_model(tmp_path: Path, termination: Path) -> None:
    eval_npz = make_npz(tmp_path / "eval.npz", 32)
    spec = write_spec(tmp_path, tmp_path / "absent.onnx", eval_npz)
    assert run_optimize(spec, tmp_path / "out") == 2
    error = failure(termination)
    assert error["pass"] == "load_export" and "does not exist" in error["message"]
    assert_nothing_written(tmp_path / "out")


def test_corrupt_model(tmp_path: Path, termination: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    spec = write_spec(tmp_path, bad, make_npz(tmp_path / "eval.npz", 32))
    assert run_optimize(spec, tmp_path / "out") == 2
    error = failure(termination)
    assert error["pass"] == "load_export" and "not a valid ONNX model" in error["message"]
    assert_nothing_written(tmp_path / "out")


def test_sha256_mismatch(tmp_path: Path, termination: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    spec = write_spec(tmp_path, model, make_npz(tmp_path / "eval.npz", 32))
    doc = yaml.safe_load(spec.read_text())
    doc["source"]["sha256"] = "0" * 64
    spec.write_text(yaml.safe_dump(doc))
    assert run_optimize(spec, tmp_path / "out") == 2
    error = failure(termination)
    assert error["type"] == "DigestMismatchError" and "pins " + "0" * 64 in error["message"]
    assert_nothing_written(tmp_path / "out")


def test_calibration_of_the_wrong_shape(tmp_path: Path, termination: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    cal = make_npz(tmp_path / "cal.npz", 32, features=12)
    spec = write_spec(
        tmp_path,
        model,
        make_npz(tmp_path / "eval.npz", 32),
        quantization={"precision": "int8", "method": "static", "calibration": {"uri": str(cal)}},
    )
    assert run_optimize(spec, tmp_path / "out") == 2
    error = failure(termination)
    assert error["pass"] == "quantize" and "sample shape [12]" in error["message"]
    assert_nothing_written(tmp_path / "out")


def test_a_candidate_whose_pass_cannot_apply_fails_alone(tmp_path: Path, termination: Path) -> None:
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
        tmp_path,
        tmp_path / "sigmoid.onnx",
        make_npz(tmp_path / "eval.npz", 32),
        quantization={"precision": "int8", "method": "dynamic"},
    )
    assert run_optimize(spec, tmp_path / "out") == 0
    summary = json.loads(termination.read_text())
    report = json.loads((tmp_path / "out" / summary["digest"] / "report.json").read_text())
    rows = {c["name"]: c for c in report["candidates"]}
    int8 = rows["int8-dynamic"]
    assert int8["failed"] and not int8["passed"] and not int8["chosen"]
    assert "Sigmoid" in int8["reason"] and int8["reason"].startswith("failed in quantize(")
    assert "throughput" not in int8  # never timed
    assert report["chosen"] == "fp32" and rows["fp32"]["chosen"]
    assert report["candidateDetails"]["int8-dynamic"]["failedStep"].startswith("quantize(")
    assert report["metrics"]["baseline"] == "onnxruntime-fp32"


def test_eval_set_smaller_than_the_batch(tmp_path: Path, termination: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    spec = write_spec(tmp_path, model, make_npz(tmp_path / "eval.npz", 5))
    assert run_optimize(spec, tmp_path / "out") == 2
    error = failure(termination)
    assert error["pass"] == "accuracy" and "fewer than the batch size 8" in error["message"]
    assert_nothing_written(tmp_path / "out")


def test_invalid_spec(tmp_path: Path, termination: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "source": {"uri": "relative/path.onnx"},
                "optimization": {"accuracy": {"dataset": "/x.npz"}},
            }
        )
    )
    assert run_optimize(spec, tmp_path / "out") == 2
    assert failure(termination)["pass"] == "spec"
    assert run_optimize(tmp_path / "absent.yaml", tmp_path / "out") == 2


def test_eval_data_of_the_wrong_dtype(tmp_path: Path, termination: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    spec = write_spec(tmp_path, model, make_npz(tmp_path / "eval.npz", 32, dtype=np.float16))
    assert run_optimize(spec, tmp_path / "out") == 2
    assert "float16" in failure(termination)["message"]

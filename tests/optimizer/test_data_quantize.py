"""Dataset checks and streaming; quantization on real onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve.model_io import TensorSpec
from optiserve_optimizer import data
from optiserve_optimizer.artifact import ModelArtifact, PassContext
from optiserve_optimizer.errors import DataError, UnsupportedOpError
from optiserve_optimizer.passes.quantize import Quantize
from optiserve_optimizer.progress import Progress
from tests.optimizer.conftest import make_mlp, make_npz

INPUT = (TensorSpec("input", "float32", (16,)),)


def context(tmp_path: Path, eval_npz: Path) -> PassContext:
    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(eval_npz)}})
    return PassContext(
        SourceSpec(uri=str(tmp_path / "m.onnx")), spec, tmp_path / "work", Progress()
    )


def test_streamed_batches_equal_the_whole_arrays(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "d.npz", 50, labels=True)
    batches = list(data.iter_batches(path, ["input", "labels"], batch=16))
    assert [len(b["input"]) for b in batches] == [16, 16, 16, 2]
    with np.load(path) as whole:
        np.testing.assert_array_equal(np.concatenate([b["input"] for b in batches]), whole["input"])
        np.testing.assert_array_equal(
            np.concatenate([b["labels"] for b in batches]), whole["labels"]
        )
    assert sum(len(b["input"]) for b in data.iter_batches(path, ["input"], 16, limit=20)) == 20


def test_compressed_npz_streams_too(tmp_path: Path) -> None:
    x = np.arange(60, dtype=np.int64).reshape(20, 3)
    np.savez_compressed(tmp_path / "c.npz", input_ids=x)
    got = np.concatenate(
        [b["input_ids"] for b in data.iter_batches(tmp_path / "c.npz", ["input_ids"], 7)]
    )
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"input": np.zeros((8, 16), np.float64)},
            "is float64, the model input 'input' needs float32",
        ),
        ({"input": np.zeros((8, 15), np.float32)}, r"sample shape \[15\]"),
        ({"other": np.zeros((8, 16), np.float32)}, "has no array 'input'"),
        ({"input": np.zeros((4, 16), np.float32)}, "fewer than the batch size 8"),
        ({"input": np.zeros((8, 16), np.float32), "labels": np.zeros(7)}, "different sample"),
    ],
)
def test_bad_datasets_are_named_with_the_pass(
    tmp_path: Path, arrays: dict[str, np.ndarray[Any, Any]], message: str
) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        data.check_against(tmp_path / "bad.npz", INPUT, "quantize", min_samples=8)
    assert str(info.value).startswith("[quantize]")


def test_a_file_that_is_not_npz_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        data.describe(tmp_path / "junk.npz", "accuracy")


@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_int8_quantization_makes_the_model_smaller(tmp_path: Path, method: str) -> None:
    src = make_mlp(tmp_path / "m.onnx", sizes=(16, 256, 256, 10))
    cal = make_npz(tmp_path / "cal.npz", 64)
    config = {
        "precision": "int8",
        "method": method,
        "calibration": str(cal),
        "samples": 32,
        "calibrate": "minmax",
    }
    result = Quantize().run(ModelArtifact(onnx=src), config, context(tmp_path, cal))
    assert result.artifact.precision == "int8"
    assert result.artifact.onnx.stat().st_size < 0.4 * src.stat().st_size
    assert result.metrics["quantizedNodes"] > 0


def test_static_quantization_refuses_calibration_of_the_wrong_dtype(tmp_path: Path) -> None:
    src = make_mlp(tmp_path / "m.onnx")
    cal = make_npz(tmp_path / "cal.npz", 32, dtype=np.float64)
    config = {"precision": "int8", "method": "static", "calibration": str(cal)}
    with pytest.raises(DataError, match=r"\[quantize\].*float64"):
        Quantize().run(ModelArtifact(onnx=src), config, context(tmp_path, cal))


def _save(
    tmp_path: Path,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    opsets: list[onnx.OperatorSetIdProto],
) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    return path


def test_a_model_with_nothing_to_quantize_is_refused(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [helper.make_node("Sigmoid", ["input"], ["out"])],
        [],
        [helper.make_opsetid("", 17)],
    )
    with pytest.raises(UnsupportedOpError, match=r"\[quantize\].*nothing to quantize.*Sigmoid"):
        Quantize().run(
            ModelArtifact(onnx=path),
            {"precision": "int8", "method": "dynamic"},
            context(tmp_path, tmp_path / "none.npz"),
        )


def test_a_custom_op_is_refused_by_the_quantizer(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.eye(16, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["mm"]),
        helper.make_node("Swish", ["mm"], ["out"], domain="com.example"),
    ]
    path = _save(
        tmp_path,
        nodes,
        [weight],
        [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    with pytest.raises(UnsupportedOpError, match=r"custom ops \['com.example::Swish'\]"):
        Quantize().run(
            ModelArtifact(onnx=path),
            {"precision": "int8", "method": "dynamic"},
            context(tmp_path, tmp_path / "none.npz"),
        )

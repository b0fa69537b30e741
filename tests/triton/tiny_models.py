"""Tiny ONNX graphs built with onnx.helper: no training, for tests of plumbing, not of models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHT = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0


def matmul_relu(path: Path) -> Path:
    """y = relu(x @ W): x float32 [batch, 4] -> y float32 [batch, 3]."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Relu", ["xw"], ["y"])],
        "matmul_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(WEIGHT, "w")],
    )
    return _save(graph, path)


def row_sum(path: Path) -> Path:
    """total = sum(tokens, axis 1): tokens int64 [batch, length] -> total int64 [batch, 1]."""
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["tokens", "axes"], ["total"], keepdims=1)],
        "row_sum",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "length"])],
        [helper.make_tensor_value_info("total", TensorProto.INT64, ["batch", 1])],
        [axes],
    )
    return _save(graph, path)


def lookup_fails_off_zero(path: Path, features: int = 8, classes: int = 4) -> Path:
    """y = softmax(sum over features of table[int(1000 * x)]): x float32 [batch, features] ->
    y float32 [batch, classes], through a ``features``-row table, so only inputs whose values
    all lie in [0, 0.008) index inside it. Zeros (Triton's warmup sample) answer; any other
    input makes onnxruntime's Gather fail at run time ("indices element out of data bounds"):
    a model that loads, warms up and is Ready, then answers real requests with errors."""
    table = np.arange(features * classes, dtype=np.float32).reshape(features, classes) / 10.0
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "scale"], ["scaled"]),
            helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["rows"], axis=0),  # [N, F, C]
            helper.make_node("ReduceSum", ["rows", "axes"], ["summed"], keepdims=0),
            helper.make_node("Softmax", ["summed"], ["y"], axis=-1),
        ],
        "lookup_fails_off_zero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])],
        [
            numpy_helper.from_array(np.array(1000.0, dtype=np.float32), "scale"),
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    return _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older onnxruntime builds too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path

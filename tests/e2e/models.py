"""A tiny ONNX classifier and its eval set, made in milliseconds, for end-to-end runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_classifier(folder: Path, features: int = 8, classes: int = 4) -> None:
    """``folder/tiny.onnx`` (x: [N, features] -> y: [N, classes]) and ``folder/eval.npz``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(features, classes)).astype(np.float32)
    bias = rng.normal(size=(classes,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "tiny.onnx"))
    x = rng.normal(size=(64, features)).astype(np.float32)
    labels = np.argmax(x @ weight + bias, axis=1).astype(np.int64)
    np.savez(folder / "eval.npz", x=x, labels=labels)

"""Fixtures for the optimizer tests: tiny ONNX graphs, and the example models (``models``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.optimizer.runs import OptimizerRunner


@pytest.fixture(autouse=True)
def _modest_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other engineers share the cores: one intra-op thread per session in tests."""
    monkeypatch.setenv("OPTISERVE_THREADS", "1")


def make_mlp(
    path: Path, sizes: tuple[int, ...] = (16, 64, 32, 10), seed: int = 0, use_matmul: bool = False
) -> Path:
    """A float MLP as ONNX: Gemm(transB=1) or MatMul+Add layers with Relu between them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "input"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w_name, b_name, out = f"w{i}", f"b{i}", f"h{i}"
        weights = rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, fan_out)).astype(np.float32)
        bias = rng.normal(0, 0.1, fan_out).astype(np.float32)
        if use_matmul:
            inits += [
                numpy_helper.from_array(weights, w_name),
                numpy_helper.from_array(bias, b_name),
            ]
            nodes += [
                helper.make_node("MatMul", [current, w_name], [out + "_mm"], name=f"mm{i}"),
                helper.make_node("Add", [out + "_mm", b_name], [out], name=f"add{i}"),
            ]
        else:
            inits += [
                numpy_helper.from_array(weights.T.copy(), w_name),
                numpy_helper.from_array(bias, b_name),
            ]
            nodes.append(
                helper.make_node(
                    "Gemm", [current, w_name, b_name], [out], transB=1, name=f"gemm{i}"
                )
            )
        current = out
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [out + "_relu"], name=f"relu{i}"))
            current = out + "_relu"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_npz(
    path: Path,
    count: int,
    features: int = 16,
    seed: int = 1,
    dtype: Any = np.float32,
    labels: bool = False,
) -> Path:
    rng = np.random.default_rng(seed)
    arrays: dict[str, Any] = {"input": rng.normal(size=(count, features)).astype(dtype)}
    if labels:
        arrays["labels"] = rng.integers(0, 10, count).astype(np.int64)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return make_mlp(tmp_path / "mlp.onnx")


@pytest.fixture
def mlp_data(tmp_path: Path) -> Path:
    return make_npz(tmp_path / "mlp-data.npz", 96)


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The digits CNN, trained briefly (a few seconds on one core)."""
    import torch

    from optiserve_optimizer.models.digits import make_digits

    torch.set_num_threads(1)
    yield make_digits(tmp_path_factory.mktemp("digits"), epochs=6, width=32)


@pytest.fixture(scope="session")
def minilm_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch

    from optiserve_optimizer.models.minilm import make_minilm

    torch.set_num_threads(1)
    return make_minilm(
        tmp_path_factory.mktemp("minilm"), eval_count=48, calib_count=16, max_length=32
    )


@pytest.fixture
def optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OptimizerRunner:
    """Runs the optimizer's entry point on specs written under ``tmp_path`` (see runs.py)."""
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("OPTISERVE_TERMINATION_LOG", str(termination))
    return OptimizerRunner(tmp_path, termination)

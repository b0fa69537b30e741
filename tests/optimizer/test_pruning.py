"""Pruning on real ONNX graphs and real weights: masks, 2:4 pattern, channels really removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from optiserve_optimizer.passes import prune_graph, prune_math
from optiserve_optimizer.passes.pruning import plan_edits
from optiserve_optimizer.passes.torch_edit import apply_edits_onnx
from tests.optimizer.conftest import make_mlp


def prune_file(src: Path, dst: Path, method: str, sparsity: float = 0.5) -> onnx.ModelProto:
    model = onnx.load(str(src))
    edits, _ = plan_edits(model, method, sparsity, use_torch=False)
    apply_edits_onnx(model, edits)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return model


def run(path: Path, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray[Any, Any] = sess.run(None, {"input": x})[0]
    return out


def test_two_four_mask_keeps_the_two_largest_of_every_four() -> None:
    w = np.array([[1.0, -5.0, 2.0, 0.5, 3.0, 3.5, -0.1, 0.2]], dtype=np.float32)
    mask = prune_math.two_four_mask(w, input_axis=1)
    assert mask.tolist() == [[False, True, True, False, True, True, False, False]]
    assert prune_math.is_two_four(w * mask, input_axis=1)
    assert not prune_math.is_two_four(w, input_axis=1)


def test_two_four_groups_run_along_the_input_axis_of_conv_weights() -> None:
    w = np.random.default_rng(0).normal(size=(6, 8, 3, 3)).astype(np.float32)
    pruned = w * prune_math.two_four_mask(w, input_axis=1)
    assert prune_math.is_two_four(pruned, input_axis=1)


def test_magnitude_mask_removes_the_smallest_fraction() -> None:
    w = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    mask = prune_math.magnitude_mask(w, 0.3)
    assert mask.sum() == 70
    assert not mask.flat[:30].any() and mask.flat[30:].all()


def test_kept_channels_expand_to_their_flattened_features() -> None:
    assert prune_math.expand_flattened(np.array([1, 3]), spatial=2).tolist() == [2, 3, 6, 7]


@pytest.mark.parametrize(
    ("channels", "sparsity", "kept"),
    [(64, 0.5, 32), (64, 0.3, 48), (100, 0.33, 64), (16, 0.9, 8), (10, 0.5, 5), (3, 0.9, 1)],
)
def test_kept_widths_are_rounded_to_kernel_blocks(
    channels: int, sparsity: float, kept: int
) -> None:
    assert prune_math.kept_count(channels, sparsity) == kept
    importance = np.arange(channels, dtype=np.float64)
    assert prune_math.keep_top(importance, sparsity).tolist() == list(
        range(channels - kept, channels)
    )


@pytest.mark.parametrize("use_matmul", [False, True])
def test_two_four_on_exported_onnx_weights(tmp_path: Path, use_matmul: bool) -> None:
    src = make_mlp(tmp_path / "mlp.onnx", use_matmul=use_matmul)
    prune_file(src, tmp_path / "pruned.onnx", "2:4")
    model = onnx.load(str(tmp_path / "pruned.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    refs = prune_graph.weight_refs(model)
    checked = [r for r in refs if prune_math.supports_two_four(inits[r.name], r.input_axis)]
    assert len(checked) == 3
    for ref in checked:
        assert prune_math.is_two_four(inits[ref.name], ref.input_axis), ref.name
        assert (inits[ref.name] == 0).mean() == pytest.approx(0.5)


@pytest.mark.parametrize("use_matmul", [False, True])
def test_structured_pruning_really_shrinks_the_onnx_model(tmp_path: Path, use_matmul: bool) -> None:
    src = make_mlp(tmp_path / "mlp.onnx", sizes=(16, 128, 64, 10), use_matmul=use_matmul)
    dst = tmp_path / "pruned.onnx"
    model = prune_file(src, dst, "structured", 0.5)
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    w0 = shapes["w0"]
    assert 64 in w0 and 128 not in w0  # hidden layer 1: 128 -> 64 neurons
    assert shapes["b0"] == (64,) and shapes["b1"] == (32,)
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    assert run(dst, x).shape == run(src, x).shape == (5, 10)


def test_structured_pruning_refuses_a_model_without_channel_chains(tmp_path: Path) -> None:
    from optiserve_optimizer.errors import PassFailedError

    src = make_mlp(tmp_path / "single.onnx", sizes=(16, 10))
    with pytest.raises(PassFailedError, match=r"\[prune\].*no channel chain"):
        prune_file(src, tmp_path / "out.onnx", "structured")


def test_magnitude_pruning_zeroes_the_requested_share(tmp_path: Path) -> None:
    from optiserve_optimizer.passes.pruning import sparsity_of

    src = make_mlp(tmp_path / "mlp.onnx")
    model = prune_file(src, tmp_path / "pruned.onnx", "magnitude", 0.7)
    assert sparsity_of(model) == pytest.approx(0.7, abs=0.01)

"""Pruning arithmetic on numpy weights: masks, 2:4 groups and channel selection.

"Input axis" is the axis a weight multiplies the layer's input along: 1 for Conv
``[out, in, kh, kw]`` and Gemm with ``transB=1`` (``[out, in]``), 0 for MatMul ``[in, out]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Weights = npt.NDArray[Any]
Mask = npt.NDArray[np.bool_]


def magnitude_mask(weights: Weights, sparsity: float) -> Mask:
    """True for the weights kept: all but the ``sparsity`` fraction of smallest |w|."""
    drop = round(sparsity * weights.size)
    mask = np.ones(weights.size, dtype=bool)
    if drop:
        mask[np.argsort(np.abs(weights), axis=None, kind="stable")[:drop]] = False
    return mask.reshape(weights.shape)


def _groups_last(weights: npt.NDArray[np.generic], input_axis: int) -> npt.NDArray[np.generic]:
    moved = np.moveaxis(weights, input_axis, -1)
    return moved.reshape(-1, 4)


def supports_two_four(weights: Weights, input_axis: int) -> bool:
    return weights.ndim >= 2 and weights.shape[input_axis] % 4 == 0


def two_four_mask(weights: Weights, input_axis: int) -> Mask:
    """Keeps the 2 largest |w| in every 4 consecutive weights along the input axis."""
    if not supports_two_four(weights, input_axis):
        raise ValueError(f"input axis of size {weights.shape[input_axis]} is not a multiple of 4")
    groups = np.abs(_groups_last(weights, input_axis))
    keep = np.zeros_like(groups, dtype=bool)
    top_two = np.argsort(-groups, axis=1, kind="stable")[:, :2]
    np.put_along_axis(keep, top_two, True, axis=1)
    moved_shape = np.moveaxis(weights, input_axis, -1).shape
    return np.moveaxis(keep.reshape(moved_shape), -1, input_axis)


def is_two_four(weights: Weights, input_axis: int) -> bool:
    """Every group of 4 along the input axis holds at least 2 zeros."""
    if not supports_two_four(weights, input_axis):
        return False
    zeros = (_groups_last(weights, input_axis) == 0).sum(axis=1)
    return bool(np.all(zeros >= 2))


# Kept widths of wide layers are rounded to a multiple of this: int8 and fp32 kernels work on
# blocks of 8-16 channels, so 45 channels run about as slowly as 48 (Torch-Pruning's round_to).
ROUND_TO = 8


def kept_count(channels: int, sparsity: float) -> int:
    count = max(1, round(channels * (1.0 - sparsity)))
    if channels >= 2 * ROUND_TO:
        count = min(channels, max(ROUND_TO, round(count / ROUND_TO) * ROUND_TO))
    return count


def keep_top(importance: npt.NDArray[Any], sparsity: float) -> npt.NDArray[np.int64]:
    """Sorted indices of the ``1 - sparsity`` share of channels that matter most (at least 1;
    a multiple of ``ROUND_TO`` in layers of at least twice that)."""
    count = kept_count(len(importance), sparsity)
    return np.sort(np.argsort(-importance, kind="stable")[:count]).astype(np.int64)


def expand_flattened(keep: npt.NDArray[np.int64], spatial: int) -> npt.NDArray[np.int64]:
    """Feature indices after ``Flatten`` of ``[C, H, W]`` (C-order) for the kept channels."""
    return (keep[:, None] * spatial + np.arange(spatial)[None, :]).reshape(-1)

"""The padded-batch check's parts (see ``checks``): which rows of the eval set to run, running
them alone and together, and comparing the answers row by row.

The rows are chosen from per-sample facts only (the mask's true length, whether it is right
padded), which the gate collects while it reads the eval set in batches (``gate_data``); the
chosen rows' inputs are then read on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve.model_io import TensorSpec
from optiserve_optimizer.errors import DataError
from optiserve_optimizer.evaluate import GateResult, compare, gate
from optiserve_optimizer.runners import Runner

PADDED_ROWS = 8
Array = npt.NDArray[Any]


@dataclass(frozen=True)
class PaddedBatch:
    """Rows of the eval set to run alone (cut to ``lengths``) and together (``width`` wide)."""

    mask: str
    sequence_inputs: tuple[str, ...]
    rows: tuple[int, ...]
    lengths: tuple[int, ...]
    width: int


def _is_mask(name: str) -> bool:
    return "mask" in name.lower()


def padded_batch(
    inputs: Sequence[TensorSpec], arrays: Mapping[str, Array], rows: int = PADDED_ROWS
) -> PaddedBatch | str:
    """The rows for the padded-batch check from whole arrays (see ``choose_padded``)."""
    shapes = {n: tuple(np.shape(a)) for n, a in arrays.items()}
    mask = mask_input(inputs)
    if mask is None or mask not in arrays:
        return choose_padded(inputs, shapes, np.zeros(0, np.int64), np.zeros(0, bool), rows)
    real = np.asarray(arrays[mask]) != 0
    lengths = real.sum(axis=1)
    right_padded = (real == (np.arange(real.shape[1])[None, :] < lengths[:, None])).all(axis=1)
    return choose_padded(inputs, shapes, lengths, right_padded, rows)


def mask_input(inputs: Sequence[TensorSpec]) -> str | None:
    """The attention-mask-like input of a sequence model, if it has one."""
    masks = [t for t in inputs if _is_mask(t.name) and len(t.shape) == 1]
    return masks[0].name if masks else None


def choose_padded(
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    lengths: Array,
    right_padded: Array,
    rows: int = PADDED_ROWS,
) -> PaddedBatch | str:
    """The rows for the padded-batch check, or why it does not apply to this model/data.
    ``shapes``: the eval arrays' whole shapes; ``lengths`` and ``right_padded``: per sample,
    its mask's count of real positions and whether they all come first."""
    masks = [t for t in inputs if _is_mask(t.name) and len(t.shape) == 1]
    ids = [
        t
        for t in inputs
        if not _is_mask(t.name) and len(t.shape) == 1 and np.dtype(t.dtype).kind in "iu"
    ]
    if not masks or not ids:
        return "not a sequence model (no integer input plus attention-mask input)"
    mask_spec, id_spec = masks[0], next((t for t in ids if t.name == "input_ids"), ids[0])
    if id_spec.shape[0] != -1:
        return f"the sequence axis of {id_spec.name!r} is fixed ({id_spec.shape[0]})"
    width = shapes[mask_spec.name][1]
    usable = np.flatnonzero(right_padded & (lengths > 0))
    if len(np.unique(lengths[usable])) < 2 or not (lengths[usable] < width).any():
        return "the eval data has no right-padded samples of different lengths"
    ordered = usable[np.argsort(lengths[usable], kind="stable")]
    picks = np.unique(np.linspace(0, len(ordered) - 1, min(rows, len(ordered))).round())
    chosen = ordered[picks.astype(int)]
    sequence = tuple(
        t.name
        for t in inputs
        if t.shape and t.shape[0] == -1 and len(shapes[t.name]) >= 2 and shapes[t.name][1] == width
    )
    return PaddedBatch(
        mask_spec.name,
        sequence,
        tuple(int(r) for r in chosen),
        tuple(int(lengths[r]) for r in chosen),
        int(width),
    )


def chosen_rows(batch: PaddedBatch, arrays: Mapping[str, Array]) -> dict[str, Array]:
    """The inputs of the batch's rows, in its order, from whole arrays."""
    rows = list(batch.rows)
    return {n: np.ascontiguousarray(a[rows]) for n, a in arrays.items()}


def _as_rows(value: Array, length: int, width: int, alone: Array) -> tuple[Array, Array]:
    """One sample's padded-batch output and its alone output as comparable 2-D arrays (token
    outputs cut to the true length, one row per token)."""
    if value.ndim >= 2 and value.shape[1] == width and alone.ndim >= 2 and alone.shape[1] == length:
        value = value[:, :length]
        return value.reshape(length, -1), alone.reshape(length, -1)
    return value.reshape(1, -1), alone.reshape(1, -1)


RowOutputs = list[list[Array]]  # per output, per chosen row: 2-D (tokens or 1, values)


def padded_outputs(
    runner: Runner, batch: PaddedBatch, sample: Mapping[str, Array]
) -> tuple[RowOutputs, RowOutputs]:
    """(alone, together): each chosen row run alone cut to its length, and all of them in one
    padded batch, as comparable 2-D arrays (token outputs cut to the true length). ``sample``
    holds the inputs of the batch's rows, in its order (``chosen_rows``)."""
    together = runner({n: np.ascontiguousarray(a) for n, a in sample.items()})
    alone_rows: RowOutputs = [[] for _ in together]
    together_rows: RowOutputs = [[] for _ in together]
    for k, length in enumerate(batch.lengths):
        feed = {
            n: np.ascontiguousarray(
                a[k : k + 1, :length] if n in batch.sequence_inputs else a[k : k + 1]
            )
            for n, a in sample.items()
        }
        for index, alone in enumerate(runner(feed)):
            padded, cut = _as_rows(together[index][k : k + 1], length, batch.width, alone)
            together_rows[index].append(padded.astype(np.float32))
            alone_rows[index].append(cut.astype(np.float32))
    return alone_rows, together_rows


def rows_verdict(
    metric: str, max_drop: float, expected: RowOutputs, got: RowOutputs, batch: PaddedBatch
) -> tuple[GateResult, dict[str, Any]]:
    """``got`` against ``expected`` row by row: the worst output's verdict, and numbers that
    name the sample with the largest difference."""
    worst: tuple[GateResult, dict[str, Any]] | None = None
    for want, have in zip(expected, got, strict=True):
        if len({w.shape[1] for w in want}) != 1:
            continue  # an output whose width depends on the length: not comparable row-wise
        verdict = gate(
            metric, max_drop, compare([np.concatenate(want)], [np.concatenate(have)], None)
        )
        row_error = [float(np.max(np.abs(w - h))) for w, h in zip(want, have, strict=True)]
        k = int(np.argmax(row_error))
        numbers = {
            "samples": len(batch.rows),
            "lengths": list(batch.lengths),
            "paddedTo": batch.width,
            "worstSample": batch.rows[k],
            "worstLength": batch.lengths[k],
            "worstMaxAbsError": row_error[k],
        }
        if worst is None or not verdict.drop <= worst[0].drop:
            worst = (verdict, numbers)
    if worst is None:
        raise DataError("accuracy", "no model output can be compared sample by sample")
    return worst

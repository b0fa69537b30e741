"""Dynamic shapes: TensorRT profiles (min/opt/max) derived from the eval data.

The batch axis spans 1..largest benchmark batch (opt: the median batch size asked for); a
sequence axis spans the real lengths found in the data (attention mask, else non-zero
tokens), opt at the median and max at the longest (rounded up to a multiple of 8). The
padding saved is the share of tokens padding to the data's fixed width would waste.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve.model_io import TensorSpec
from optiserve.uri import local_path
from optiserve_optimizer import data
from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.onnx_utils import load_model, signature
from optiserve_optimizer.settings import PassConfig, ShapesSettings

NAME = "shapes"
STREAM_BATCH = 1024  # rows read at a time for the lengths


def _round_up(value: int, multiple: int = 8) -> int:
    return int(-(-value // multiple) * multiple)


def sequence_lengths(arrays: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.int64] | None:
    lengths: npt.NDArray[np.int64]
    if "attention_mask" in arrays:
        lengths = np.asarray(arrays["attention_mask"]).sum(axis=1).astype(np.int64)
        return lengths
    for value in arrays.values():
        if value.ndim == 2 and np.issubdtype(value.dtype, np.integer):
            lengths = (value != 0).sum(axis=1).astype(np.int64)
            return lengths
    return None


def streamed_lengths(
    path: Path, names: Sequence[str], batch: int = STREAM_BATCH
) -> npt.NDArray[np.int64] | None:
    """``sequence_lengths`` of a whole dataset, read ``batch`` rows at a time (one int per
    sample stays in memory, never the token arrays)."""
    parts = [sequence_lengths(b) for b in data.iter_batches(path, names, batch, role=NAME)]
    found = [p for p in parts if p is not None]
    return np.concatenate(found) if found and len(found) == len(parts) else None


def derive_profiles(
    inputs: Sequence[TensorSpec],
    arrays: Mapping[str, npt.NDArray[Any]],
    batch_sizes: Sequence[int],
) -> tuple[dict[str, dict[str, list[int]]], dict[str, Any]]:
    """Profiles per input, and facts for the report (lengths, padding saved)."""
    width = next((v.shape[1] for v in arrays.values() if v.ndim >= 2), 0)
    return profiles_of(inputs, sequence_lengths(arrays), width, batch_sizes)


def profiles_of(
    inputs: Sequence[TensorSpec],
    lengths: npt.NDArray[np.int64] | None,
    width: int,
    batch_sizes: Sequence[int],
) -> tuple[dict[str, dict[str, list[int]]], dict[str, Any]]:
    """``derive_profiles`` from the samples' sequence ``lengths`` and the padded ``width``."""
    max_batch = max(batch_sizes)
    opt_batch = sorted(batch_sizes)[len(batch_sizes) // 2]
    facts: dict[str, Any] = {}
    seq: tuple[int, int, int] | None = None
    if lengths is not None and len(lengths):
        p50, p100 = np.percentile(lengths, [50, 100])
        seq = (max(1, int(lengths.min())), _round_up(int(p50)), min(width, _round_up(int(p100))))
        seq = (seq[0], max(seq[0], min(seq[1], seq[2])), seq[2])
        facts = {
            "paddedWidth": int(width),
            "lengthP50": float(p50),
            "lengthMax": int(p100),
            "paddingSaved": round(1.0 - float(lengths.mean()) / width, 4),
            "paddingSavedAtMax": round(1.0 - float(lengths.mean()) / seq[2], 4),
        }
    profiles: dict[str, dict[str, list[int]]] = {}
    for spec in inputs:
        fixed = list(spec.shape)
        lo, mid, hi = [1], [opt_batch], [max_batch]
        for dim in fixed:
            if dim == -1 and seq is not None:
                lo, mid, hi = [*lo, seq[0]], [*mid, seq[1]], [*hi, seq[2]]
            else:
                size = dim if dim > 0 else 1
                lo, mid, hi = [*lo, size], [*mid, size], [*hi, size]
        profiles[spec.name] = {"min": lo, "opt": mid, "max": hi}
    return profiles, facts


class Shapes:
    name = NAME
    settings_type = ShapesSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        inputs = signature(load_model(artifact.onnx, NAME)).inputs
        settings = ShapesSettings.of(config, NAME)
        path = local_path(settings.dataset or ctx.spec.accuracy.dataset)
        data.check_against(path, inputs, NAME)
        names = [t.name for t in inputs]
        members = data.describe(path, NAME)
        width = next((members[n].shape[1] for n in names if len(members[n].shape) >= 2), 0)
        lengths = streamed_lengths(path, names)
        profiles, facts = profiles_of(inputs, lengths, width, ctx.spec.benchmark.batch_sizes)
        ctx.shared["profiles"] = profiles
        ctx.shared["shapeFacts"] = facts
        return PassResult(artifact.evolve(ctx.step_label or NAME), {"profiles": profiles, **facts})

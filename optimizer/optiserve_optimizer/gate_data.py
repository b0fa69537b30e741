"""The accuracy gate's data, read batch by batch: the optimizer's memory does not grow with the
eval set.

The source model runs once over the eval set; its outputs go to a spool on disk
(``OutputSpool``: one raw file per output, written and read a batch at a time). Each candidate
then runs over the same batches, and its outputs are compared with the spooled ones as they
come (``evaluate.Comparison`` keeps sums, counts and maxima) and, when the eval data has
``expected_*`` arrays, with those (``checks.ReferenceTally``). What stays in memory besides one
batch: two numbers per sample for the padded-batch check's choice of rows (length, right
padded), the few rows that check runs, and the first rows the benchmark times.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from optiserve_optimizer import data
from optiserve_optimizer.evaluate import TOKEN_MASK, Comparison
from optiserve_optimizer.runners import Runner

ROLE = "accuracy"
Array = npt.NDArray[Any]


class OutputSpool:
    """A model's outputs over the eval set on disk, appended and read back a batch at a time
    (float32, as the gate compares them)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.row_shapes: list[tuple[int, ...]] = []
        self.rows = 0
        self._writers: list[BinaryIO] = []

    def _file(self, index: int) -> Path:
        return self.folder / f"output-{index}.f32"

    def append(self, outputs: Sequence[Array]) -> None:
        if not self._writers:
            self.row_shapes = [tuple(o.shape[1:]) for o in outputs]
            self._writers = [self._file(i).open("wb") for i in range(len(outputs))]
        shapes = [tuple(o.shape[1:]) for o in outputs]
        if shapes != self.row_shapes:
            raise ValueError(
                f"the model's output shapes per sample changed between batches: "
                f"{self.row_shapes} then {shapes}"
            )
        for writer, value in zip(self._writers, outputs, strict=True):
            writer.write(np.ascontiguousarray(value, dtype=np.float32).tobytes())
        self.rows += len(outputs[0]) if outputs else 0

    def close(self) -> None:
        for writer in self._writers:
            writer.close()

    def shapes(self) -> list[tuple[int, ...]]:
        """Every output's whole shape (samples first), as if held in memory."""
        return [(self.rows, *shape) for shape in self.row_shapes]

    def batches(self, batch: int) -> Iterator[list[Array]]:
        """The outputs back, ``batch`` rows at a time."""
        readers = [self._file(i).open("rb") for i in range(len(self.row_shapes))]
        try:
            done = 0
            while done < self.rows:
                rows = min(batch, self.rows - done)
                yield [
                    np.frombuffer(
                        reader.read(rows * int(np.prod(shape, dtype=np.int64)) * 4), np.float32
                    ).reshape((rows, *shape))
                    for reader, shape in zip(readers, self.row_shapes, strict=True)
                ]
                done += rows
        finally:
            for reader in readers:
                reader.close()


@dataclass
class MaskRows:
    """Per sample of the eval set: its true length and whether it is right-padded."""

    lengths: list[Array] = field(default_factory=list)
    right_padded: list[Array] = field(default_factory=list)

    def add(self, mask: Array) -> None:
        real = np.asarray(mask) != 0
        lengths = real.sum(axis=1)
        self.lengths.append(lengths)
        self.right_padded.append(
            (real == (np.arange(real.shape[1])[None, :] < lengths[:, None])).all(axis=1)
        )

    def arrays(self) -> tuple[Array, Array]:
        if not self.lengths:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        return np.concatenate(self.lengths), np.concatenate(self.right_padded)


@dataclass(frozen=True)
class EvalStream:
    """The eval set's arrays the gate reads: the model inputs, and ``labels`` and the
    ``expected_*`` references when the file has them."""

    path: Path
    input_names: tuple[str, ...]
    extra: tuple[str, ...]
    batch: int

    @classmethod
    def of(cls, path: Path, input_names: Sequence[str], batch: int) -> EvalStream:
        members = data.describe(path, ROLE)
        extra = tuple(n for n in members if n == data.LABELS or data.is_reference(n))
        return cls(path, tuple(input_names), extra, batch)

    def batches(self) -> Iterator[dict[str, Array]]:
        return data.iter_batches(self.path, [*self.input_names, *self.extra], self.batch, role=ROLE)

    def feed(self, batch: dict[str, Array]) -> dict[str, Array]:
        return {n: batch[n] for n in self.input_names}

    def head(self, rows: int) -> dict[str, Array]:
        """The first ``rows`` samples of the inputs (what the benchmark times)."""
        return data.head(self.path, self.input_names, rows, ROLE)

    def rows(self, picks: Sequence[int]) -> dict[str, Array]:
        """The inputs of the samples ``picks`` (ascending or not), in that order."""
        wanted = sorted(set(picks))
        found: dict[int, dict[str, Array]] = {}
        start = 0
        for batch in data.iter_batches(self.path, self.input_names, self.batch, role=ROLE):
            count = len(next(iter(batch.values())))
            for row in wanted:
                if start <= row < start + count:
                    found[row] = {n: v[row - start].copy() for n, v in batch.items()}
            start += count
        return {n: np.stack([found[r][n] for r in picks]) for n in self.input_names}


def source_pass(
    runner: Runner, stream: EvalStream, spool: OutputSpool, tally: Any, mask_input: str | None
) -> MaskRows:
    """Runs the source over the eval set: its outputs to ``spool``, compared with the
    references (``tally``, when not None), and the mask's rows noted."""
    masks = MaskRows()
    try:
        for batch in stream.batches():
            outputs = [np.asarray(o, dtype=np.float32) for o in runner(stream.feed(batch))]
            spool.append(outputs)
            if tally is not None:
                tally.add(batch, outputs)
            if mask_input is not None:
                masks.add(batch[mask_input])
    finally:
        spool.close()
    return masks


def candidate_pass(
    runner: Runner, stream: EvalStream, spool: OutputSpool, tally: Any
) -> dict[str, float]:
    """Runs a candidate over the eval set; the gate's numbers against the source's outputs
    (``evaluate.compare`` over the whole set), and ``tally`` fed with its outputs."""
    comparison = Comparison()
    for batch, reference in zip(stream.batches(), spool.batches(stream.batch), strict=True):
        outputs = [np.asarray(o, dtype=np.float32) for o in runner(stream.feed(batch))]
        comparison.add(reference[0], outputs[0], batch.get(data.LABELS), batch.get(TOKEN_MASK))
        if tally is not None:
            tally.add(batch, outputs)
    return comparison.details()

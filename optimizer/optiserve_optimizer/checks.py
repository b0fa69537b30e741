"""Correctness evidence beyond "the candidate agrees with the user's own model".

- reference outputs: ``expected_<output>`` arrays in the eval data (see ``data``) are what
  the model should answer. The source model is compared with them using the spec's metric,
  and a run whose source disagrees beyond ``maxDrop`` fails (a wrong source would otherwise
  pass every gate, being compared only with itself); every candidate is gated on them too.
- padded batch, for sequence models (an integer input with a free sequence axis and an
  attention-mask-like input): a few samples of different true lengths are run each alone,
  cut to its length, and together as stored (padded); a model that reads its mask answers the
  same. The source failing it fails the run, naming the worst sample. A candidate must answer
  the samples run alone as the source does alone (its padded answers are what the gate
  compares); its own alone-vs-padded difference is reported as ``selfDrop``, not gated: INT8
  dynamic quantization scales activations per batch, so MiniLM's answers move by about as
  much as its quantization error (cosine drop 0.009 vs 0.007) with the batch's neighbours.
The report's ``checks`` list says what was checked, on what, the result and the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve.model_io import ModelSignature, TensorSpec
from optiserve_optimizer import data
from optiserve_optimizer.errors import CorrectnessError, DataError
from optiserve_optimizer.evaluate import Comparison, GateResult, compare, gate
from optiserve_optimizer.runners import Runner

PADDED_ROWS = 8
SOURCE = "source"
Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Check:
    name: str  # input-binding | reference-outputs | padded-batch
    subject: str  # "source" or a candidate's name
    what: str
    result: str  # passed | failed | skipped
    numbers: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self) | {"numbers": dict(self.numbers)}


# --- reference outputs ------------------------------------------------------------------


def reference_names(path: Path, outputs: Sequence[TensorSpec]) -> dict[int, str]:
    """``{output index: expected_* array name}`` of the references in the eval set."""
    names = [t.name for t in outputs]
    found = data.reference_arrays(data.describe(path, "accuracy"), names, path, "accuracy")
    return {names.index(output): array_name for output, array_name in found.items()}


def check_reference_shapes(
    path: Path,
    outputs: Sequence[TensorSpec],
    references: Mapping[int, str],
    produced: Sequence[tuple[int, ...]],
) -> None:
    """Each reference array has the shape of what the source produced on the eval set."""
    members = data.describe(path, "accuracy")
    for index, array_name in references.items():
        shape = members[array_name].shape
        if shape != tuple(produced[index]):
            raise DataError(
                "accuracy",
                f"{path.name}[{array_name!r}] has shape {list(shape)}, the model's output "
                f"{outputs[index].name!r} has {list(produced[index])} on that data",
            )


class ReferenceTally:
    """One model's outputs against the eval data's ``expected_*`` arrays, fed batch by batch
    (the batches of the eval set that hold those arrays)."""

    def __init__(self, references: Mapping[int, str]) -> None:
        self.references = dict(references)
        self.comparisons = {index: Comparison() for index in self.references}

    def add(self, batch: Mapping[str, Array], outputs: Sequence[Array]) -> None:
        for index, array_name in self.references.items():
            expected = np.asarray(batch[array_name], dtype=np.float32)
            self.comparisons[index].add(expected, outputs[index], None)


def reference_verdict(
    metric: str, max_drop: float, tally: ReferenceTally, output_names: Sequence[str]
) -> tuple[GateResult, str]:
    """The worst (largest drop) comparison with the references, and its output."""
    worst: tuple[GateResult, str] | None = None
    for index, comparison in sorted(tally.comparisons.items()):
        verdict = gate(metric, max_drop, comparison.details())
        if worst is None or not verdict.drop <= worst[0].drop:
            worst = (verdict, output_names[index])
    assert worst is not None, "no references"
    return worst


def describe_numbers(verdict: GateResult) -> dict[str, float]:
    keep = ("meanCosine", "maxAbsError", "agreement")
    return {"drop": verdict.drop, "maxDrop": verdict.max_drop} | {
        k: v for k, v in verdict.details.items() if k in keep
    }


def said(verdict: GateResult) -> str:
    """``cosine drop 0.13 > maxDrop 0.01 (mean cosine 0.87, max |difference| 0.42)``."""
    parts = []
    if "meanCosine" in verdict.details:
        parts.append(f"mean cosine {verdict.details['meanCosine']:.4g}")
    if "agreement" in verdict.details:
        parts.append(f"top-1 agreement {verdict.details['agreement']:.4g}")
    if "maxAbsError" in verdict.details:
        parts.append(f"max |difference| {verdict.details['maxAbsError']:.4g}")
    relation = ">" if not verdict.within_drop else "<="
    return (
        f"{verdict.metric} drop {verdict.drop:.4g} {relation} maxDrop {verdict.max_drop:g} "
        f"({', '.join(parts)})"
    )


# --- padded batch -----------------------------------------------------------------------


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


# --- the run's checker ------------------------------------------------------------------


class Checker:
    """Runs the checks on the source (failing the run) and on each candidate (its gate).

    The reference outputs come in as a ``ReferenceTally`` of the model's outputs over the eval
    set (``tally()`` makes an empty one to feed batch by batch, ``tally_of`` one from whole
    outputs); the padded batch runs the model on its few rows (``sample``) itself."""

    def __init__(
        self,
        metric: str,
        max_drop: float,
        sig: ModelSignature,
        eval_path: Path,
        references: Mapping[int, str],
        padded: PaddedBatch | str,
        sample: Mapping[str, Array],
        binding: Mapping[str, Any] | None = None,
    ) -> None:
        self.metric, self.max_drop, self.sig = metric, max_drop, sig
        self.eval_path, self.references = eval_path, dict(references)
        self.padded, self.sample = padded, sample
        self.checks: list[Check] = []
        self.source_alone: RowOutputs | None = None  # the source's answers, rows run alone
        if binding:
            self.checks.append(
                Check(
                    "input-binding",
                    SOURCE,
                    "every dataset's arrays bound to the model inputs by name, dtype and sample "
                    "shape before any work",
                    "passed",
                    dict(binding),
                )
            )

    @classmethod
    def for_source(
        cls,
        metric: str,
        max_drop: float,
        sig: ModelSignature,
        eval_path: Path,
        arrays: Mapping[str, Array],
        outputs: Sequence[Array],
        runner: Runner,
        binding: Mapping[str, Any] | None = None,
        max_batch: int = PADDED_ROWS,
    ) -> Checker:
        """``checked_source`` for whole arrays: the eval inputs and the source's outputs."""
        references = reference_names(eval_path, sig.outputs)
        check_reference_shapes(eval_path, sig.outputs, references, [o.shape for o in outputs])
        padded = padded_batch(sig.inputs, arrays, rows=min(PADDED_ROWS, max_batch))
        sample = chosen_rows(padded, arrays) if isinstance(padded, PaddedBatch) else {}
        checker = cls(metric, max_drop, sig, eval_path, references, padded, sample, binding)
        return checker.checked_source(runner, checker.tally_of(outputs))

    def checked_source(self, runner: Runner, tally: ReferenceTally) -> Checker:
        """Checks the source model (``tally``: its outputs vs the references, ``runner``);
        raises ``CorrectnessError`` when it fails one. Returns this checker."""
        failures = self.run(SOURCE, runner, tally)
        if failures:
            raise CorrectnessError("accuracy", "the source model " + "; ".join(failures))
        return self

    def tally(self) -> ReferenceTally:
        return ReferenceTally(self.references)

    def tally_of(self, outputs: Sequence[Array], batch: int = 256) -> ReferenceTally:
        """A tally of whole outputs, the references read ``batch`` rows at a time."""
        tally = self.tally()
        names = list(self.references.values())
        if not names:
            return tally
        start = 0
        for rows in data.iter_batches(self.eval_path, names, batch, role="accuracy"):
            count = len(next(iter(rows.values())))
            tally.add(rows, [np.asarray(o[start : start + count]) for o in outputs])
            start += count
        return tally

    def run(self, subject: str, runner: Runner, tally: ReferenceTally) -> list[str]:
        """Every check on one model; returns failure texts (and records all results)."""
        failures: list[str] = []
        names = [t.name for t in self.sig.outputs]
        if self.references:
            verdict, output = reference_verdict(self.metric, self.max_drop, tally, names)
            self._record(
                "reference-outputs",
                subject,
                verdict,
                {"output": output},
                f"outputs vs the eval data's expected_* arrays ({verdict.metric})",
            )
            if not verdict.within_drop:
                failures.append(f"disagrees with the reference outputs ({output}): {said(verdict)}")
        else:
            self.checks.append(
                Check(
                    "reference-outputs", subject, "no expected_* arrays in the eval data", "skipped"
                )
            )
        if isinstance(self.padded, str):
            self.checks.append(Check("padded-batch", subject, self.padded, "skipped"))
            return failures
        alone, together = padded_outputs(runner, self.padded, self.sample)
        own, numbers = rows_verdict(self.metric, self.max_drop, alone, together, self.padded)
        if self.source_alone is None:  # the source: alone and padded must agree
            self.source_alone = alone
            verdict, what = own, "alone vs in one padded batch"
        else:  # a candidate: alone as the source answers alone; its own difference reported
            verdict, against = rows_verdict(
                self.metric, self.max_drop, self.source_alone, alone, self.padded
            )
            numbers = {
                **against,
                "selfDrop": own.drop,
                "selfWorstMaxAbsError": numbers["worstMaxAbsError"],
            }
            what = "alone vs the source model alone (its own padded-vs-alone drop: selfDrop)"
        self._record(
            "padded-batch",
            subject,
            verdict,
            numbers,
            f"{len(self.padded.rows)} samples of different true lengths, {what} ({verdict.metric})",
        )
        if verdict.within_drop:
            return failures
        worst = (
            f"worst sample {numbers['worstSample']} ({numbers['worstLength']} of "
            f"{numbers['paddedTo']} positions), max |difference| "
            f"{numbers['worstMaxAbsError']:.4g}"
        )
        if subject == SOURCE:
            failures.append(
                f"answers differently inside a padded batch than alone: {said(verdict)}; "
                f"{worst}; does it ignore {self.padded.mask!r}?"
            )
        else:
            failures.append(
                f"answers samples run alone unlike the source model: {said(verdict)}; {worst}"
            )
        return failures

    def gate(
        self, subject: str, runner: Runner, tally: ReferenceTally, verdict: GateResult
    ) -> GateResult:
        """``verdict`` (against the original model) with this candidate's checks added."""
        before = len(self.checks)
        failures = self.run(subject, runner, tally)
        details: dict[str, float] = {}
        for check in self.checks[before:]:
            if "drop" in check.numbers:
                prefix = "reference" if check.name == "reference-outputs" else "padded"
                details[f"{prefix}Drop"] = float(check.numbers["drop"])
        for failure in failures:
            verdict = verdict.with_check(failure, {})
        return verdict.with_check("", details)

    def _record(
        self, name: str, subject: str, verdict: GateResult, extra: Mapping[str, Any], what: str
    ) -> None:
        result = "passed" if verdict.within_drop else "failed"
        self.checks.append(
            Check(name, subject, what, result, {**describe_numbers(verdict), **extra})
        )

    def report(self) -> list[dict[str, Any]]:
        return [c.to_wire() for c in self.checks]

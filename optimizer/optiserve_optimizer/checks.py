"""Correctness evidence beyond "the candidate agrees with the user's own model".

- reference outputs: ``expected_<output>`` arrays in the eval data (see ``data``) are what
  the model should answer. The source model is compared with them using the spec's metric,
  and a run whose source disagrees beyond ``maxDrop`` fails (a wrong source would otherwise
  pass every gate, being compared only with itself); every candidate is gated on them too.
- padded batch (its parts in ``padding``), for sequence models (an integer input with a free
  sequence axis and an attention-mask-like input): a few samples of different true lengths
  are run each alone, cut to its length, and together as stored (padded); a model that reads
  its mask answers the same. The source failing it fails the run, naming the worst sample. A
  candidate must answer the samples run alone as the source does alone (its padded answers
  are what the gate compares); its own alone-vs-padded difference is reported as
  ``selfDrop``, not gated: INT8 dynamic quantization scales activations per batch, so
  MiniLM's answers move by about as much as its quantization error (cosine drop 0.009 vs
  0.007) with the batch's neighbours.
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
from optiserve_optimizer.evaluate import Comparison, GateResult, gate
from optiserve_optimizer.padding import (
    PADDED_ROWS,
    PaddedBatch,
    RowOutputs,
    chosen_rows,
    padded_batch,
    padded_outputs,
    rows_verdict,
)
from optiserve_optimizer.runners import Runner

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

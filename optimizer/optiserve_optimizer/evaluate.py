"""The accuracy gate: every candidate against the original model on the eval data (and,
through ``checks``, against reference outputs and on a padded batch).

Metrics, as ``spec.accuracy.metric`` names them (``drop`` is what ``maxDrop`` bounds):
- top1: accuracy(original) - accuracy(candidate) with labels, else 1 - argmax agreement;
- cosine: 1 - mean cosine similarity of the outputs (embeddings), per sample;
- maxAbsError: the largest absolute difference of any output value.
All three are reported whenever they make sense, so a failing candidate says how it failed.
Per-token outputs ([N, tokens, ...], e.g. token classification) are compared over real tokens
only when the eval data has an ``attention_mask`` of that [N, tokens] shape: padded positions
carry no answer, and counting them would let a candidate pass (or fail) on padding. Cosine and
agreement are then per real token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

Outputs = Sequence[npt.NDArray[np.float32]]


@dataclass(frozen=True)
class GateResult:
    metric: str
    drop: float
    max_drop: float
    details: Mapping[str, float]
    failures: tuple[str, ...] = field(default=())  # other checks that failed (``checks``)

    @property
    def within_drop(self) -> bool:
        return bool(np.isfinite(self.drop)) and self.drop <= self.max_drop

    @property
    def passed(self) -> bool:
        return self.within_drop and not self.failures

    def reason(self) -> str:
        own = (
            []
            if self.within_drop
            else [f"{self.metric} drop {self.drop:.4g} > maxDrop {self.max_drop:g}"]
        )
        return "; ".join([*own, *self.failures])

    def with_check(self, failure: str, details: Mapping[str, float]) -> GateResult:
        """This verdict plus another check's numbers and, unless ``failure`` is empty, its
        failure (the drop stays the drop against the original model)."""
        failures = (*self.failures, failure) if failure else self.failures
        return replace(self, details={**self.details, **details}, failures=failures)


def mean_cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    cos = (a2 * b2).sum(axis=1) / np.maximum(norms, 1e-12)
    return float(cos.mean())


TOKEN_MASK = "attention_mask"  # the eval data's array marking real tokens


def real_tokens(
    ref: npt.NDArray[Any], got: npt.NDArray[Any], labels: Any, mask: Any
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], Any] | None:
    """(reference, candidate, labels) of the real tokens only, as [tokens, ...] rows; None
    when the output is not per token of ``mask``."""
    if mask is None or ref.ndim < 3 or tuple(ref.shape[:2]) != tuple(np.shape(mask)):
        return None
    real = np.asarray(mask).astype(bool)
    token_labels = labels[real] if labels is not None and np.shape(labels) == real.shape else None
    return ref[real], got[real], token_labels


def compare(
    reference: Outputs,
    candidate: Outputs,
    labels: npt.NDArray[Any] | None,
    mask: npt.NDArray[Any] | None = None,
) -> dict[str, float]:
    """Every applicable metric on the first output (the model's answer); per-token outputs
    over the real tokens of ``mask`` (the eval data's attention mask) only."""
    comparison = Comparison()
    comparison.add(reference[0], candidate[0], labels, mask)
    return comparison.details()


class Comparison:
    """``compare`` over an eval set fed batch by batch: sums, counts and maxima, so the same
    numbers come out without holding the outputs (only the order of the cosine sum differs)."""

    def __init__(self) -> None:
        self.rows = 0
        self.cosine_sum = 0.0
        self.max_abs = 0.0
        self.agreeing = 0
        self.classifier = False
        self.labelled = False
        self.right_original = 0
        self.right = 0
        self.per_token = False
        self.mismatch = False

    def add(
        self,
        ref: npt.NDArray[Any],
        got: npt.NDArray[Any],
        labels: npt.NDArray[Any] | None,
        mask: npt.NDArray[Any] | None = None,
    ) -> None:
        """One batch of the first output: the reference's, the candidate's, and the batch's
        labels and attention mask (None when the eval data has none)."""
        if self.mismatch or ref.shape != got.shape:
            self.mismatch = True
            return
        tokens = real_tokens(ref, got, labels, mask)
        if tokens is not None:
            ref, got, labels = tokens
            ref, got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
            self.per_token = True
        if ref.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(ref - got))))
        a2, b2 = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1)
        b2 = b2.astype(np.float64)
        norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
        self.cosine_sum += float(((a2 * b2).sum(axis=1) / np.maximum(norms, 1e-12)).sum())
        self.rows += len(ref)
        if ref.ndim == 2 and ref.shape[1] > 1:
            self.classifier = True
            ref_top, got_top = ref.argmax(axis=1), got.argmax(axis=1)
            self.agreeing += int((ref_top == got_top).sum())
            if labels is not None:
                self.labelled = True
                self.right_original += int((ref_top == labels).sum())
                self.right += int((got_top == labels).sum())

    def details(self) -> dict[str, float]:
        if self.mismatch:
            return {"shapeMismatch": 1.0}
        rows = self.rows or float("nan")  # no rows: nothing was shown equal
        details = {"maxAbsError": self.max_abs, "meanCosine": self.cosine_sum / rows}
        if self.classifier:
            details["agreement"] = self.agreeing / rows
            if self.labelled:
                details["top1Original"] = self.right_original / rows
                details["top1"] = self.right / rows
        if self.per_token:
            details["realTokens"] = float(self.rows)
        return details


def gate(metric: str, max_drop: float, details: Mapping[str, float]) -> GateResult:
    if "shapeMismatch" in details:
        return GateResult(metric, float("inf"), max_drop, details)
    if metric == "top1":
        if "top1" in details:
            drop = details["top1Original"] - details["top1"]
        elif "agreement" in details:
            drop = 1.0 - details["agreement"]
        else:
            drop = float("inf")
    elif metric == "cosine":
        drop = 1.0 - details["meanCosine"]
    else:
        drop = details["maxAbsError"]
    return GateResult(metric, max(0.0, drop) if np.isfinite(drop) else drop, max_drop, details)

"""The gate on per-token outputs (token classification) counts real tokens only."""

from __future__ import annotations

from typing import Any

import numpy as np

from optiserve_optimizer.evaluate import compare, gate


def token_outputs() -> tuple[Any, Any, Any]:
    """(reference, candidate, mask): 4 sequences of 6 positions, 3 labels; the candidate
    agrees on every real token and is garbage (other argmax, other sign) on padding."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(4, 6, 3)).astype(np.float32)
    mask = (np.arange(6)[None, :] < np.array([6, 4, 2, 1])[:, None]).astype(np.int64)
    candidate = reference.copy()
    candidate[mask == 0] = -10.0 * reference[mask == 0]
    return reference, candidate, mask


def test_padding_does_not_fail_a_candidate_that_agrees_on_real_tokens() -> None:
    reference, candidate, mask = token_outputs()
    unmasked = compare([reference], [candidate], None)
    assert gate("cosine", 0.01, unmasked).drop > 0.1  # what counting padding did
    details = compare([reference], [candidate], None, mask)
    assert details["realTokens"] == 13.0
    assert details["meanCosine"] == 1.0 and details["maxAbsError"] == 0.0
    assert details["agreement"] == 1.0
    for metric in ("cosine", "top1", "maxAbsError"):
        assert gate(metric, 0.0, details).passed, metric


def test_padding_does_not_pass_a_candidate_wrong_on_real_tokens() -> None:
    reference, _, mask = token_outputs()
    candidate = reference.copy()
    candidate[0, 1] = -reference[0, 1]  # one real token, answered the other way round
    details = compare([reference], [candidate], None, mask)
    cosines = np.ones(13)
    cosines[1] = -1.0
    assert np.isclose(details["meanCosine"], cosines.mean())  # per real token
    assert not gate("cosine", 0.1, details).passed
    labels = np.where(mask == 1, reference.argmax(-1), -100)  # padded labels ignored
    details = compare([reference], [candidate], labels, mask)
    assert details["top1Original"] == 1.0 and details["top1"] == 12 / 13


def test_sentence_outputs_and_other_shapes_are_compared_as_before() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(4, 8)).astype(np.float32)
    mask = np.ones((4, 8), dtype=np.int64)
    with_mask = compare([reference], [reference * 2], None, mask)
    assert "realTokens" not in with_mask
    assert with_mask == compare([reference], [reference * 2], None)

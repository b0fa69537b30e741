"""The accuracy gate read batch by batch (gate_data): the same numbers and verdicts as the gate
over whole arrays, and peak memory that does not grow with the eval set.

The models are numpy functions (an embedding table pooled over real tokens, a classifier head
on it, a per-token head), so what is measured is the gate's own memory, not a runtime's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from optiserve.model_io import ModelSignature, TensorSpec
from optiserve_optimizer import checks, gate_data, padding
from optiserve_optimizer.evaluate import TOKEN_MASK, compare, gate
from optiserve_optimizer.runners import Runner, run_all

Array = npt.NDArray[Any]
MIB = 2**20
WIDTH, VOCAB, DIM, CLASSES = 128, 1000, 16, 5
TABLE = np.random.default_rng(3).normal(size=(VOCAB, DIM)).astype(np.float32)
HEAD = np.random.default_rng(4).normal(size=(DIM, CLASSES)).astype(np.float32)
INPUTS = (TensorSpec("input_ids", "int64", (-1,)), TensorSpec("attention_mask", "int64", (-1,)))
GROWTH_BOUND = 8 * MIB


def write_eval(path: Path, rows: int, **extra: Array) -> Path:
    rng = np.random.default_rng(rows)
    lengths = rng.integers(1, WIDTH + 1, rows)
    mask = (np.arange(WIDTH)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, VOCAB, (rows, WIDTH)).astype(np.int64) * mask
    np.savez(path, input_ids=ids, attention_mask=mask, **extra)
    return path


def model(kind: str, noise: float = 0.0) -> Runner:
    """``pooled`` [N, DIM] embeddings, ``logits`` [N, CLASSES] or ``tokens`` [N, WIDTH, DIM];
    ``noise``: an error that depends on each sample alone, never on how samples are batched."""
    axis = np.arange(1, DIM + 1)

    def run(feed: Any) -> list[Array]:
        ids = feed["input_ids"]
        hidden = TABLE[ids]
        if kind == "tokens":
            return [(hidden + noise * np.sin(ids[..., None] * axis)).astype(np.float32)]
        mask = feed["attention_mask"][..., None]
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        pooled = (pooled + noise * np.sin(ids.sum(1, keepdims=True) * axis)).astype(np.float32)
        return [pooled @ HEAD if kind == "logits" else pooled]

    return run


def whole(path: Path) -> dict[str, Array]:
    with np.load(path) as npz:
        return {n: npz[n] for n in npz.files}


@pytest.mark.parametrize("kind", ["pooled", "logits", "tokens"])
def test_streamed_gate_gives_the_numbers_and_verdict_of_whole_arrays(
    tmp_path: Path, kind: str
) -> None:
    rows = 203  # not a multiple of the batch
    labels = np.random.default_rng(0).integers(0, CLASSES, rows) if kind == "logits" else None
    extra = {} if labels is None else {"labels": labels}
    path = write_eval(tmp_path / "eval.npz", rows, **extra)
    arrays = whole(path)
    feed = {n: arrays[n] for n in ("input_ids", "attention_mask")}
    source, candidate = model(kind), model(kind, noise=0.05)
    reference = run_all(source, feed, 64)
    expected = compare(reference, run_all(candidate, feed, 64), labels, arrays[TOKEN_MASK])

    stream = gate_data.EvalStream.of(path, ["input_ids", "attention_mask"], 32)
    spool = gate_data.OutputSpool(tmp_path / "spool")
    masks = gate_data.source_pass(source, stream, spool, None, "attention_mask")
    assert spool.shapes() == [reference[0].shape]
    spooled = np.concatenate([b[0] for b in spool.batches(50)])
    np.testing.assert_array_equal(spooled, reference[0])
    got = gate_data.candidate_pass(candidate, stream, spool, None)

    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name
    for metric, max_drop in (("cosine", 0.001), ("cosine", 0.5), ("maxAbsError", 0.2)):
        assert gate(metric, max_drop, got).passed == gate(metric, max_drop, expected).passed
    lengths, right_padded = masks.arrays()
    np.testing.assert_array_equal(lengths, arrays[TOKEN_MASK].sum(axis=1))
    assert right_padded.all()
    shapes = {n: v.shape for n, v in arrays.items()}
    chosen = padding.choose_padded(INPUTS, shapes, lengths, right_padded)
    assert chosen == padding.padded_batch(INPUTS, feed)
    assert isinstance(chosen, padding.PaddedBatch)
    sample = stream.rows(chosen.rows)
    for name, rows_of in padding.chosen_rows(chosen, feed).items():
        np.testing.assert_array_equal(sample[name], rows_of)


def test_streamed_reference_check_equals_the_whole_one(tmp_path: Path) -> None:
    rows = 150
    right = model("pooled")(whole(write_eval(tmp_path / "plain.npz", rows)))[0]
    path = write_eval(tmp_path / "eval.npz", rows, expected=right)
    sig = ModelSignature(INPUTS, (TensorSpec("output", "float32", (DIM,)),))
    arrays = whole(path)
    feed = {n: arrays[n] for n in ("input_ids", "attention_mask")}
    source = model("pooled", noise=0.001)
    checker = checks.Checker.for_source("cosine", 0.01, sig, path, feed, source(feed), source)
    stream = gate_data.EvalStream.of(path, ["input_ids", "attention_mask"], 16)
    assert stream.extra == ("expected",)
    streamed = checks.ReferenceTally(checks.reference_names(path, sig.outputs))
    gate_data.source_pass(source, stream, gate_data.OutputSpool(tmp_path / "s"), streamed, None)
    by_whole = checks.reference_verdict("cosine", 0.01, checker.tally_of(source(feed)), ["o"])
    by_stream = checks.reference_verdict("cosine", 0.01, streamed, ["o"])
    assert by_stream[0].passed == by_whole[0].passed
    assert by_stream[0].drop == pytest.approx(by_whole[0].drop, rel=1e-9, abs=1e-12)


CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_gate_stream import model
from optiserve_optimizer import checks, gate_data, padding

def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024

def gate_run(path, spool_dir):
    names = ["input_ids", "attention_mask"]
    stream = gate_data.EvalStream.of(Path(path), names, 64)
    spool = gate_data.OutputSpool(Path(spool_dir))
    tally = checks.ReferenceTally(checks.reference_names(Path(path), []))  # none in these sets
    masks = gate_data.source_pass(model("logits"), stream, spool, tally, "attention_mask")
    details = gate_data.candidate_pass(model("logits", 0.05), stream, spool, None)
    lengths, _ = masks.arrays()
    return details, int(lengths.sum())

small, large, scratch = sys.argv[2:]
gate_run(small, scratch + "/small")  # what stays loaded anyway
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS: the peak from here on is the gate's
before = status("VmRSS")
details, real = gate_run(large, scratch + "/large")
print(json.dumps({"growth": status("VmHWM") - before, "details": details, "real": real}))
"""


def test_the_gate_over_a_large_eval_set_stays_within_a_memory_bound(tmp_path: Path) -> None:
    rows = 40_000
    large = write_eval(tmp_path / "large.npz", rows)  # 78 MiB of int64 tokens
    assert large.stat().st_size > 8 * GROWTH_BOUND
    small = write_eval(tmp_path / "small.npz", 100)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, (Path(__file__).parent, small, large, tmp_path))],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["growth"] < GROWTH_BOUND, f"peak RSS grew {got['growth'] / MIB:.1f} MiB"
    arrays = whole(large)
    feed = {n: arrays[n] for n in ("input_ids", "attention_mask")}
    reference = run_all(model("logits"), feed, 64)
    expected = compare(reference, run_all(model("logits", 0.05), feed, 64), None)
    assert got["details"] == pytest.approx(expected, rel=1e-12)
    assert got["real"] == int(arrays[TOKEN_MASK].sum())

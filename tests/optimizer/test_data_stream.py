"""Datasets are read in rows: the optimizer's peak RSS does not grow with a dataset's size.

A child process reads datasets far larger than the bound the test allows it to grow by: the
first rows (what the export checks and INT8 type trials read), the sequence lengths of every
sample (TensorRT shape profiles), a MinMax calibration over every sample (INT8 static) and one
recovery epoch's shuffled minibatches. Each is first run on a tiny file, so what onnxruntime
and numpy keep anyway is in the baseline; before each, the child resets its peak
(``/proc/self/clear_refs``) and reports its peak resident size (``VmHWM``) over its resident
size before the step. The answers must equal those of reading the arrays whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve.model_io import TensorSpec
from optiserve_optimizer import data
from optiserve_optimizer.errors import DataError
from optiserve_optimizer.passes.quantize import StreamingReader
from optiserve_optimizer.passes.recovery import epoch_batches
from optiserve_optimizer.passes.shapes import derive_profiles, profiles_of, streamed_lengths

MIB = 2**20
TOKENS = 128  # padded width of the token arrays
FEATURES = 128  # width of the calibration model's input
GROWTH_BOUND = 8 * MIB  # what reading either large dataset may add to the peak RSS

CHILD = """
import json, sys
import numpy as np
from pathlib import Path
from optiserve_optimizer import data
from optiserve_optimizer.passes.quantize import StreamingReader
from optiserve_optimizer.passes.recovery import epoch_batches
from optiserve_optimizer.passes.shapes import streamed_lengths
from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024

def reset_peak():  # VmHWM := VmRSS (Linux), so the peak is this work's alone
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

def measured(step, *args):
    # step(*args) and how far it took the peak resident size above the size before it
    reset_peak()
    before = status("VmRSS")
    result = step(*args)
    return result, status("VmHWM") - before

def first_rows(tokens):
    return data.head(Path(tokens), ["input_ids", "attention_mask"], 8)["input_ids"].tolist()

def lengths(tokens):
    return streamed_lengths(Path(tokens), ["input_ids", "attention_mask"])

def ranges(features, model, scratch):
    calibrator = create_calibrator(
        Path(model), ["MatMul"], augmented_model_path=str(Path(scratch) / "augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
    )
    calibrator.collect_data(StreamingReader(Path(features), ["x"], 10**9))
    return {k: np.asarray(t.range_value, np.float64).ravel().tolist()
            for k, t in calibrator.compute_data().items()}

def epoch(tokens):  # one recovery epoch's minibatches, shuffled in windows of 1024 rows
    batches = epoch_batches(Path(tokens), ["input_ids", "attention_mask"], 0, window=1024)
    return sum(int(b["attention_mask"].sum()) for b in batches)

def work(tokens, features, model, scratch):
    first, a = measured(first_rows, tokens)
    found, b = measured(lengths, tokens)
    got, c = measured(ranges, features, model, scratch)
    trained, d = measured(epoch, tokens)
    return {"first": first, "lengths_sum": int(found.sum()), "lengths_len": len(found),
            "ranges": got, "epoch_sum": trained,
            "growth": {"first rows": a, "lengths": b, "calibration": c, "epoch": d}}

small_tokens, small_features, tokens, features, model, scratch = sys.argv[1:]
work(small_tokens, small_features, model, scratch)  # what stays loaded anyway
print(json.dumps(work(tokens, features, model, scratch)))
"""


def token_set(path: Path, rows: int) -> Path:
    rng = np.random.default_rng(rows)
    lengths = rng.integers(1, TOKENS + 1, rows)
    mask = (np.arange(TOKENS)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, 30000, (rows, TOKENS)).astype(np.int64) * mask
    np.savez(path, input_ids=ids, attention_mask=mask)
    return path


def feature_set(path: Path, rows: int) -> Path:
    x = np.random.default_rng(rows).normal(size=(rows, FEATURES)).astype(np.float32)
    np.savez_compressed(path, x=x)  # deflated members stream too
    return path


def matmul_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(FEATURES, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class OneBatch:
    """A calibration reader giving everything at once (what the streaming reader replaces)."""

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batches = iter([batch])

    def get_next(self) -> dict[str, Any] | None:
        return next(self.batches, None)


def whole_ranges(model: Path, features: Path, scratch: Path) -> dict[str, list[float]]:
    """MinMax ranges with the whole calibration set in memory, run as one batch."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with np.load(features) as arrays:
        whole = {"x": arrays["x"]}
    calibrator = create_calibrator(
        model,
        ["MatMul"],
        augmented_model_path=str(scratch / "augmented-whole.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
    )
    calibrator.collect_data(OneBatch(whole))
    return {
        k: np.asarray(t.range_value, np.float64).ravel().tolist()
        for k, t in calibrator.compute_data().items()
    }


def test_large_datasets_are_read_in_rows_with_the_same_answers(tmp_path: Path) -> None:
    tokens = token_set(tmp_path / "tokens.npz", 40_000)  # 78 MiB of int64
    features = feature_set(tmp_path / "features.npz", 40_000)  # 20 MiB of float32
    size = tokens.stat().st_size
    assert size > 8 * GROWTH_BOUND and 40_000 * FEATURES * 4 > 2 * GROWTH_BOUND
    model = matmul_model(tmp_path / "m.onnx")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(token_set(tmp_path / "small-tokens.npz", 64)),
            str(feature_set(tmp_path / "small-features.npz", 64)),
            str(tokens),
            str(features),
            str(model),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    growth = {step: round(grew / MIB, 1) for step, grew in got["growth"].items()}
    assert max(growth.values()) < GROWTH_BOUND / MIB, f"peak RSS growth (MiB): {growth}"

    with np.load(tokens) as arrays:
        ids, mask = arrays["input_ids"], arrays["attention_mask"]
    assert got["first"] == ids[:8].tolist()
    assert got["lengths_len"] == len(mask) and got["lengths_sum"] == int(mask.sum())
    assert got["epoch_sum"] == int(mask.sum())  # every sample once per epoch
    assert got["ranges"] == whole_ranges(model, features, tmp_path)

    specs = [TensorSpec("input_ids", "int64", (-1,)), TensorSpec("attention_mask", "int64", (-1,))]
    names = ["input_ids", "attention_mask"]
    expected = derive_profiles(specs, {"input_ids": ids, "attention_mask": mask}, [1, 8, 32])
    streamed = profiles_of(specs, streamed_lengths(tokens, names), TOKENS, [1, 8, 32])
    assert streamed == expected


def test_first_rows_read_in_rows_equal_the_whole_arrays(tmp_path: Path) -> None:
    path = token_set(tmp_path / "t.npz", 100)
    with np.load(path) as arrays:
        whole = {n: arrays[n] for n in arrays.files}
    first = data.head(path, ["input_ids", "attention_mask", "labels"], 7)
    assert sorted(first) == ["attention_mask", "input_ids"]  # an absent name is left out
    for name, value in first.items():
        assert value.flags.writeable and value.flags.c_contiguous
        np.testing.assert_array_equal(value, whole[name][:7])
    assert len(data.head(path, ["input_ids"], 1000)["input_ids"]) == 100
    batches = list(data.iter_batches(path, ["input_ids"], 32))
    assert [len(b["input_ids"]) for b in batches] == [32, 32, 32, 4]
    np.testing.assert_array_equal(
        np.concatenate([b["input_ids"] for b in batches]), whole["input_ids"]
    )
    reader = StreamingReader(path, ["attention_mask"], 40)
    assert sum(len(b["attention_mask"]) for b in reader) == 40


def test_recovery_epochs_shuffle_a_small_set_whole_and_a_large_one_in_windows(
    tmp_path: Path,
) -> None:
    path = token_set(tmp_path / "t.npz", 300)
    with np.load(path) as arrays:
        ids = arrays["input_ids"]
    for epoch in (0, 1):  # what the whole-array training did: one permutation of every row
        got = np.concatenate([b["input_ids"] for b in epoch_batches(path, ["input_ids"], epoch)])
        np.testing.assert_array_equal(got, ids[np.random.default_rng(epoch).permutation(300)])
    windows = list(epoch_batches(path, ["input_ids"], 0, batch=16, window=100))
    assert max(len(b["input_ids"]) for b in windows) == 16
    got = np.concatenate([b["input_ids"] for b in windows])
    for start in (0, 100, 200):  # each window holds its own rows, in another order
        window = got[start : start + 100]
        assert sorted(map(tuple, window)) == sorted(map(tuple, ids[start : start + 100]))
        assert not np.array_equal(window, ids[start : start + 100])


def test_a_dataset_that_cannot_be_read_in_rows_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "fortran.npz"
    np.savez(path, x=np.asfortranarray(np.ones((4, 3), np.float32)))
    with pytest.raises(DataError) as caught:
        next(data.iter_batches(path, ["x"], 2, role="quantize"))
    message = str(caught.value)
    assert "quantize" in message and "fortran.npz cannot be streamed" in message
    assert "np.ascontiguousarray" in message
    truncated = tmp_path / "short.npz"
    np.savez(truncated, x=np.ones((4, 3), np.float32))
    raw = truncated.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(raw[:-200])  # the zip directory gone: not an .npz at all
    with pytest.raises(DataError, match=r"cut\.npz"):
        data.head(cut, ["x"], 2)

"""The pure parts of input binding and the correctness checks, on numpy "models"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve.model_io import ModelSignature, TensorSpec
from optiserve_optimizer import checks, data, inputs, padding
from optiserve_optimizer.errors import CorrectnessError, DataError, short_cause
from optiserve_optimizer.evaluate import GateResult, gate
from optiserve_optimizer.main import _bounded
from optiserve_optimizer.plan import build_plan
from optiserve_optimizer.runners import Runner
from tests.optimizer.runs import OptimizerRunner

Array = npt.NDArray[Any]
WIDTH, VOCAB, DIM = 10, 30, 6
SEQ_INPUTS = (
    TensorSpec("input_ids", "int64", (-1,)),
    TensorSpec("attention_mask", "int64", (-1,)),
)
SIG = ModelSignature(SEQ_INPUTS, (TensorSpec("output", "float32", (DIM,)),))
TABLE = np.random.default_rng(5).normal(size=(VOCAB, DIM)).astype(np.float32)


def tokens(count: int = 12) -> dict[str, Array]:
    lengths = np.array([3, WIDTH, 5, 7, 4, 9, 6, 8, 2, 10, 5, 3][:count])
    mask = (np.arange(WIDTH)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.random.default_rng(1).integers(1, VOCAB, (count, WIDTH)) * mask
    return {"input_ids": ids, "attention_mask": mask}


def pooling(use_mask: bool, noise: float = 0.0) -> Runner:
    """Mean of token embeddings, over the real tokens (``use_mask``) or every position."""

    def run(feed: Any) -> list[Array]:
        hidden = TABLE[feed["input_ids"]]
        mask = feed["attention_mask"] if use_mask else np.ones_like(feed["attention_mask"])
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return [(pooled + noise).astype(np.float32)]

    return run


def test_short_cause_keeps_the_torchscript_cause_not_the_traceback() -> None:
    message = (
        "The following operation failed in the TorchScript interpreter.\n"
        "Traceback of TorchScript (most recent call last):\n"
        '  File "code/__torch__.py", line 12, in forward\n'
        "    return self.l(x)\n"
        "RuntimeError: mat1 and mat2 must have the same dtype, but got Double and Float\n"
    )
    assert short_cause(RuntimeError(message)) == (
        "mat1 and mat2 must have the same dtype, but got Double and Float"
    )
    assert short_cause(ValueError("first line\nsecond")) == "first line"
    assert short_cause(KeyError()) == "KeyError"
    cut = short_cause(RuntimeError("x" * 1000), limit=50)
    assert len(cut) == 50 and cut.endswith("...")
    long = "a" * 3000 + " the cause"
    assert _bounded(long).endswith("the cause") and len(_bounded(long)) < 1600


def test_names_must_match_inputs_labels_or_references(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    data.check_names(["a", "b", "labels", "expected"], ["a", "b"], path, "accuracy")
    data.check_names(["a"], ["a", "mask"], path, "accuracy", optional=["mask"])
    with pytest.raises(DataError, match=r"d\.npz has no array 'b' for the model input 'b'"):
        data.check_names(["a"], ["a", "b"], path, "quantize")
    with pytest.raises(DataError, match=r"array\(s\) \['attn_mask'\] that are no input") as info:
        data.check_names(["a", "attn_mask"], ["a"], path, "recover")
    assert str(info.value).startswith("[recover]")


def test_reference_arrays_are_named_after_outputs(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    assert data.reference_arrays(["x", "expected"], ["logits"], path, "accuracy") == {
        "logits": "expected"
    }
    assert data.reference_arrays(["expected_b"], ["a", "b"], path, "accuracy") == {
        "b": "expected_b"
    }
    with pytest.raises(DataError, match="ambiguous: the model has 2 outputs"):
        data.reference_arrays(["expected"], ["a", "b"], path, "accuracy")
    with pytest.raises(DataError, match="reference for output 'c'"):
        data.reference_arrays(["expected_c"], ["a", "b"], path, "accuracy")
    with pytest.raises(DataError, match="two references for output 'a'"):
        data.reference_arrays(["expected", "expected_a"], ["a"], path, "accuracy")


def test_every_dataset_the_plan_reads_is_checked_once(tmp_path: Path) -> None:
    spec = OptimizationSpec.model_validate(
        {
            "accuracy": {"dataset": str(tmp_path / "eval.npz")},
            "benchmark": {"batchSizes": [1, 16]},
            "quantization": {
                "precision": "int8",
                "method": "static",
                "calibration": {"uri": str(tmp_path / "cal.npz")},
            },
            "pruning": {"method": "structured", "sparsity": 0.3},
            "recovery": {"method": "distill", "dataset": str(tmp_path / "train.npz")},
        }
    )
    source = SourceSpec(uri=str(tmp_path / "m.pt"), format="torchscript")
    found = inputs.datasets_of(build_plan(source, spec), spec)
    assert [(d.path.name, d.role, d.min_samples) for d in found] == [
        ("eval.npz", "accuracy", 16),
        ("cal.npz", "quantize", 1),
        ("train.npz", "recover", 1),
    ]


def test_torchscript_inputs_take_the_eval_sets_dtypes_and_a_free_sequence_axis(
    tmp_path: Path,
) -> None:
    np.savez(
        tmp_path / "e.npz",
        attention_mask=np.ones((4, 7), np.int64),
        image=np.zeros((4, 3, 2), np.float32),
        labels=np.zeros(4, np.int64),
    )
    members = data.describe(tmp_path / "e.npz", "accuracy")
    specs = inputs.torchscript_inputs(["image", "attention_mask", "absent_optional"], members)
    assert specs == (
        TensorSpec("image", "float32", (3, 2)),
        TensorSpec("attention_mask", "int64", (-1,)),
    )
    np.savez(tmp_path / "cal.npz", image=np.zeros((4, 3, 2), np.float64))
    with pytest.raises(DataError, match=r"cal\.npz\['image'\] is float64, the model input"):
        inputs.check_datasets(
            specs[:1], ["output"], [inputs.Dataset(tmp_path / "cal.npz", "quantize")]
        )


def test_padded_batch_picks_mixed_lengths_or_says_why_not() -> None:
    arrays = tokens()
    batch = padding.padded_batch(SEQ_INPUTS, arrays, rows=4)
    assert isinstance(batch, padding.PaddedBatch)
    assert batch.mask == "attention_mask" and batch.width == WIDTH
    assert batch.lengths[0] == 2 and batch.lengths[-1] == WIDTH  # shortest and longest
    assert list(batch.lengths) == sorted(batch.lengths) and len(batch.rows) == 4
    assert batch.sequence_inputs == ("input_ids", "attention_mask")
    image = (TensorSpec("x", "float32", (4,)),)
    assert "not a sequence model" in str(padding.padded_batch(image, {"x": np.zeros((2, 4))}))
    fixed = (TensorSpec("input_ids", "int64", (WIDTH,)), SEQ_INPUTS[1])
    assert "is fixed" in str(padding.padded_batch(fixed, arrays))
    full = {k: v[[1, 9]] for k, v in arrays.items()}  # no padding at all
    assert "no right-padded samples" in str(padding.padded_batch(SEQ_INPUTS, full))


def test_rows_run_alone_and_padded_agree_only_when_the_mask_is_read() -> None:
    arrays = tokens()
    batch = padding.padded_batch(SEQ_INPUTS, arrays)
    assert isinstance(batch, padding.PaddedBatch)
    sample = padding.chosen_rows(batch, arrays)
    alone, together = padding.padded_outputs(pooling(True), batch, sample)
    verdict, numbers = padding.rows_verdict("cosine", 0.01, alone, together, batch)
    assert verdict.within_drop and numbers["worstMaxAbsError"] < 1e-6
    alone, together = padding.padded_outputs(pooling(False), batch, sample)
    verdict, numbers = padding.rows_verdict("cosine", 0.01, alone, together, batch)
    assert not verdict.within_drop and numbers["worstMaxAbsError"] > 0.1
    assert numbers["worstLength"] < WIDTH  # the worst sample is a padded one
    assert numbers["lengths"] == list(batch.lengths)


def write_eval(tmp_path: Path, **extra: Array) -> tuple[Path, dict[str, Array]]:
    arrays = tokens()
    np.savez(tmp_path / "eval.npz", **arrays, **extra)
    return tmp_path / "eval.npz", arrays


def test_a_source_ignoring_its_mask_fails_the_run(tmp_path: Path) -> None:
    path, arrays = write_eval(tmp_path)
    runner = pooling(False)
    with pytest.raises(CorrectnessError) as info:
        checks.Checker.for_source("cosine", 0.01, SIG, path, arrays, runner(arrays), runner)
    message = str(info.value)
    assert "the source model answers differently inside a padded batch than alone" in message
    assert "worst sample" in message and "does it ignore 'attention_mask'?" in message


def test_a_source_disagreeing_with_the_references_fails_the_run(tmp_path: Path) -> None:
    right = pooling(True)(tokens())[0]
    path, arrays = write_eval(tmp_path, expected=right)
    wrong = pooling(True, noise=0.3)
    with pytest.raises(CorrectnessError, match=r"disagrees with the reference outputs \(output\)"):
        checks.Checker.for_source("maxAbsError", 0.01, SIG, path, arrays, wrong(arrays), wrong)
    with pytest.raises(DataError, match=r"has shape \[12, 3\], the model's output 'output'"):
        path, arrays = write_eval(tmp_path, expected=right[:, :3])
        checks.Checker.for_source("cosine", 0.01, SIG, path, arrays, [right], wrong)


def test_a_candidate_is_gated_on_the_references_and_on_rows_alone(tmp_path: Path) -> None:
    right = pooling(True)(tokens())[0]
    path, arrays = write_eval(tmp_path, expected=right)
    source = pooling(True, noise=0.006)  # within maxDrop 0.01 of the references
    checker = checks.Checker.for_source(
        "maxAbsError", 0.01, SIG, path, arrays, source(arrays), source, {"inputs": ["x"]}
    )
    drifted = pooling(True, noise=0.012)  # 0.006 from the source, 0.012 from the references
    outputs = drifted(arrays)
    against_source = gate("maxAbsError", 0.01, {"maxAbsError": 0.006})
    verdict = checker.gate("int8", drifted, checker.tally_of(outputs), against_source)
    assert verdict.within_drop and not verdict.passed
    assert "disagrees with the reference outputs" in verdict.reason()
    assert verdict.details["referenceDrop"] == pytest.approx(0.012, abs=1e-6)
    ignoring = pooling(False)
    tally = checker.tally_of(ignoring(arrays), batch=5)  # references read 5 rows at a time
    verdict = checker.gate("broken", ignoring, tally, against_source)
    assert "answers samples run alone unlike the source model" not in verdict.reason()
    report = {(c["name"], c["subject"]): c for c in checker.report()}
    assert report[("input-binding", "source")]["numbers"] == {"inputs": ["x"]}
    assert report[("reference-outputs", "int8")]["result"] == "failed"
    assert report[("padded-batch", "int8")]["result"] == "passed"
    assert report[("padded-batch", "broken")]["numbers"]["selfDrop"] > 0.1


def test_with_check_keeps_the_drop_and_adds_the_failure() -> None:
    base = GateResult("top1", 0.001, 0.01, {"agreement": 0.999})
    assert base.passed and base.reason() == ""
    failed = base.with_check("disagrees with the references", {"referenceDrop": 0.2})
    assert failed.drop == 0.001 and not failed.passed
    assert failed.reason() == "disagrees with the references"
    assert failed.details == {"agreement": 0.999, "referenceDrop": 0.2}
    both = GateResult("top1", 0.5, 0.01, {}).with_check("padded", {})
    assert both.reason() == "top1 drop 0.5 > maxDrop 0.01; padded"


def test_an_unexpected_torchscript_error_reaches_the_operator_as_its_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: OptimizerRunner
) -> None:
    from optiserve_optimizer import pipeline

    traceback = "\n".join(
        ["The following operation failed in the TorchScript interpreter."]
        + [f'  File "code/__torch__/m{i}.py", line {i}, in forward' for i in range(200)]
        + ["RuntimeError: The size of tensor a (7) must match the size of tensor b (9)"]
    )

    def explode(*_: Any, **__: Any) -> Any:
        raise RuntimeError(traceback)

    monkeypatch.setattr(pipeline, "run_request", explode)
    error = optimizer.optimize(
        "m",
        {"uri": str(tmp_path / "m.pt"), "format": "torchscript"},
        {"accuracy": {"dataset": str(tmp_path / "e.npz")}},
        expect=1,
    ).error
    assert error["message"] == (
        "RuntimeError: The size of tensor a (7) must match the size of tensor b (9)"
    )

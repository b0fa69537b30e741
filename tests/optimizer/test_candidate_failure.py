"""Candidates fail alone, on a real TorchScript model: the run packages the best of the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.optimizer.runs import OptimizerRunner

pytestmark = pytest.mark.models


def linear_classifier(folder: Path) -> dict[str, Path]:
    """Logistic regression as TorchScript: one Linear layer, so no hidden channel exists that
    structured pruning could remove (the classes are the outputs), while INT8 still applies."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 10)).eval()
    rng = np.random.default_rng(0)
    eval_x = rng.normal(size=(96, 32)).astype(np.float32)
    train_x = rng.normal(size=(64, 32)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(eval_x)).argmax(dim=1).numpy().astype(np.int64)
    scripted = torch.jit.trace(model, torch.from_numpy(eval_x[:2]))  # type: ignore[no-untyped-call]
    files = {
        "model": folder / "linear.pt",
        "eval": folder / "eval.npz",
        "train": folder / "train.npz",
    }
    scripted.save(str(files["model"]))
    np.savez(files["eval"], input=eval_x, labels=labels)
    np.savez(files["train"], input=train_x)
    return files


def test_a_pass_that_cannot_apply_fails_its_candidates_and_the_run_goes_on(
    tmp_path: Path, optimizer: OptimizerRunner
) -> None:
    files = linear_classifier(tmp_path)
    run = optimizer.optimize(
        "linear",
        {"uri": str(files["model"]), "format": "torchscript"},
        {
            "pruning": {"method": "structured", "sparsity": 0.5},
            "recovery": {"method": "distill", "epochs": 1, "dataset": str(files["train"])},
            "quantization": {"precision": "int8", "method": "dynamic"},
            "accuracy": {"dataset": str(files["eval"]), "metric": "top1", "maxDrop": 0.1},
            "benchmark": {"batchSizes": [1, 16], "iterations": 6, "warmup": 1, "rounds": 3},
        },
    )
    summary, report = run.summary, run.report
    rows = {c["name"]: c for c in report["candidates"]}
    assert list(rows) == [
        "fp32",
        "int8-dynamic",
        "pruned-structured",
        "pruned-structured+int8-dynamic",
    ]
    pruned, pruned_int8 = rows["pruned-structured"], rows["pruned-structured+int8-dynamic"]
    for row in (pruned, pruned_int8):  # the second shares the failed prefix: not retried
        assert row["failed"] and not row["passed"] and not row["chosen"]
        assert row["reason"].startswith("failed in prune(") and "[prune]" in row["reason"]
        assert "throughput" not in row and "speedup" not in row
    assert pruned["reason"] == pruned_int8["reason"]

    chosen = next(c for c in report["candidates"] if c["chosen"])
    assert chosen["name"] in ("fp32", "int8-dynamic") and chosen["passed"]
    assert report["chosen"] == chosen["name"] and chosen["reason"]
    assert report["metrics"]["baseline"] == "pytorch-torchscript"
    assert report["baseline"]["name"] == "pytorch-torchscript"
    assert set(report["baseline"]["beside"]) == {"onnxruntime-fp32"}
    assert report["metrics"]["speedupVsOnnxruntime"].endswith("x")
    assert report["metrics"]["measured"]["rounds"] == 3
    speedups = report["candidateDetails"][chosen["name"]]["speedups"]
    assert set(speedups) == {"pytorch-torchscript", "onnxruntime-fp32"}
    assert report["candidateDetails"]["pruned-structured"]["failedStep"].startswith("prune(")
    # the status ladder (the termination summary) shows the failed candidates and why
    ladder = {c["name"]: c for c in summary["candidates"]}
    assert (
        ladder["pruned-structured"]["failed"] and "prune" in ladder["pruned-structured"]["reason"]
    )

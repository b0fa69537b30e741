"""What serving the chosen artifact costs, measured in a child process on real models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve.api.status import ServingCost
from optiserve.render.sizing import MIB, triton_sizing
from optiserve_optimizer.footprint import feed_of, measure_serving_cost
from optiserve_optimizer.main import SUMMARY_LIMIT
from tests.optimizer.conftest import make_mlp
from tests.optimizer.runs import OptimizerRunner

pytestmark = pytest.mark.models


def _feed(features: int, batch: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {"input": rng.normal(size=(batch, features)).astype(np.float32)}


def test_the_child_sees_the_models_memory_and_cpu_not_the_parents(tmp_path: Path) -> None:
    small = make_mlp(tmp_path / "small.onnx", sizes=(16, 64, 10))
    big = make_mlp(tmp_path / "big.onnx", sizes=(16, 4096, 4096, 10))  # 16.9M floats: 64 MiB
    log: list[str] = []
    costs = [measure_serving_cost(m, _feed(16, 32), 1, "cpu", log.append) for m in (small, big)]
    assert all(c is not None for c in costs), log
    small_cost, big_cost = (c for c in costs if c is not None)
    # The weights are resident once loaded: at least their size more than the small model.
    assert big_cost.model_rss_bytes - small_cost.model_rss_bytes >= 60 * MIB, log
    # The runtime's own baseline does not depend on the model.
    assert abs(big_cost.runtime_rss_bytes - small_cost.runtime_rss_bytes) < 32 * MIB
    assert big_cost.cpu_seconds_per_inference > small_cost.cpu_seconds_per_inference > 0
    assert big_cost.batch == 32 and big_cost.runtime.startswith("onnxruntime ")
    assert "peak RSS" in log[-1]


def test_a_model_the_child_cannot_load_is_logged_not_fatal(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    log: list[str] = []
    assert measure_serving_cost(broken, _feed(16, 4), 1, "cpu", log.append) is None
    assert log and log[0].startswith("serving cost not measured (exit 1")


def test_a_feed_shorter_than_the_batch_is_repeated() -> None:
    feed = feed_of({"input": np.arange(3, dtype=np.float32)}, 7)
    assert feed["input"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert feed_of({"input": np.arange(9)}, 4)["input"].tolist() == [0, 1, 2, 3]


def test_the_optimizer_records_the_served_models_cost_in_report_and_summary(
    digits_files: Any, optimizer: OptimizerRunner
) -> None:
    run = optimizer.optimize(
        "digits",
        {"uri": str(digits_files.model), "format": "torchscript"},
        {
            "quantization": {"precision": "int8", "method": "dynamic"},
            "accuracy": {"dataset": str(digits_files.eval), "metric": "top1", "maxDrop": 0.05},
            "benchmark": {"batchSizes": [1, 16], "iterations": 3, "warmup": 1},
        },
    )
    assert len(run.termination_text.encode()) < SUMMARY_LIMIT
    summary, report = run.summary, run.report
    measured = report["artifact"]["servingCost"]
    assert summary["artifact"]["servingCost"] == measured
    cost = ServingCost.model_validate(measured)
    assert cost.batch == 16  # the largest benchmark batch
    assert cost.peak_rss_bytes > cost.runtime_rss_bytes > 0
    assert 0 < cost.cpu_seconds_per_inference < 1
    sized = triton_sizing(cost)
    assert sized.basis.startswith("measured:")
    print(f"digits {report['artifact']['candidate']}: {measured} -> {sized}")

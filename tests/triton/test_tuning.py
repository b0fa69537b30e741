"""serving.tuning on a real local tritonserver: a short search, a budget nobody meets, a server
that dies mid-search, and the optimizer packaging the tuned config (report, plot, summary)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from optiserve.api.serving import ServingSpec
from optiserve.serve import LocalTriton
from optiserve.serve.loadgen import server_counters
from optiserve.serve.repository import onnx_signature, read_config, write_onnx_model
from optiserve_operator.summary import parse_summary
from optiserve_optimizer.main import run_optimize
from optiserve_optimizer.tuning.runner import search
from optiserve_testing.example_models import digits_samples
from tests.optimizer.conftest import make_mlp, make_npz
from tests.triton.conftest import MODEL

pytestmark = [pytest.mark.triton, pytest.mark.models, pytest.mark.timeout(600)]

HAND = {"maxBatchSize": 64, "dynamicBatching": {"maxQueueDelayMicroseconds": 1000}}
SHORT = {"trialSeconds": 1, "warmupSeconds": 1, "concurrency": [8], "maxSeconds": 60}


def serving(**tuning: Any) -> ServingSpec:
    return ServingSpec.model_validate({**HAND, "tuning": {**SHORT, **tuning}})


def digits_repository(tmp_path: Path, digits_model: Path, spec: ServingSpec) -> Path:
    write_onnx_model(tmp_path, MODEL, digits_model, spec)
    return tmp_path


def run(tmp_path: Path, digits_model: Path, spec: ServingSpec, **kwargs: Any) -> Any:
    lines: list[str] = []
    began = time.monotonic()
    result = search(
        digits_repository(tmp_path, digits_model, spec),
        MODEL,
        onnx_signature(digits_model),
        spec,
        "onnxruntime_onnx",
        digits_samples(32),
        lines.append,
        **kwargs,
    )
    return result, time.monotonic() - began, lines


def test_short_search_measures_the_spec_first_and_packages_the_best_within_budget(
    tmp_path: Path, digits_model: Path
) -> None:
    spec = serving(latencyBudgetMs=1000, maxTrials=3)
    result, seconds, lines = run(tmp_path, digits_model, spec)

    assert [t.failure for t in result.trials] == [None, None, None]
    assert result.trials[0].config.settings().max_batch_size == 64  # the spec's own first
    assert result.trials[0].config.instances == 1
    assert len({t.config for t in result.trials}) == 3
    for trial in result.trials:
        assert trial.throughput_rps > 50 and 0 < trial.p50_ms <= trial.p99_ms
        # Triton's own statistics of the window are in every trial.
        assert trial.details["computeInferMs"] > 0 and trial.details["meanBatch"] >= 1
    summary = result.summary
    best = max(result.trials, key=lambda t: t.throughput_rps)
    assert summary.outcome == "tuned" and summary.trials == 3
    assert summary.settings == best.config.settings()
    assert summary.throughput_rps == round(best.throughput_rps, 1)
    assert result.serving.instance_group.count == best.config.instances
    assert seconds < 60 and summary.seconds <= 60
    assert any("trial 3" in line for line in lines)


def test_impossible_budget_packages_the_best_effort_and_says_so(
    tmp_path: Path, digits_model: Path
) -> None:
    spec = serving(latencyBudgetMs=0.001, maxTrials=2)
    result, _, _ = run(tmp_path, digits_model, spec)

    assert len(result.trials) == 2
    summary = result.summary
    assert summary.outcome == "bestEffort"
    assert summary.p99_ms == round(min(t.p99_ms for t in result.trials), 2)
    assert "no trial met the budget (p99 <= 0.001 ms)" in summary.message
    assert result.serving is not None  # still packaged, with the nearest config


def test_server_killed_mid_trial_ends_the_search_with_what_was_measured(
    tmp_path: Path, digits_model: Path
) -> None:
    killers: list[threading.Thread] = []

    def kill_once_traffic_flows(triton: LocalTriton) -> None:
        # Inside the second trial's load: once Triton has answered requests of this trial.
        deadline = time.monotonic() + 30
        start: int | None = None
        while time.monotonic() < deadline and triton.pid is not None:
            try:
                answered = server_counters(triton.grpc_url, MODEL).successes
            except Exception:  # not loaded yet, mid-reload
                answered = None
            if answered is not None:
                # A reload may restart the counters: count from the lowest reading.
                start = answered if start is None else min(start, answered)
                if answered > start + 50:
                    os.killpg(triton.pid, signal.SIGKILL)
                    return
            time.sleep(0.05)

    def kill_during_second_trial(triton: LocalTriton, index: int) -> None:
        if index == 1:
            killers.append(threading.Thread(target=kill_once_traffic_flows, args=(triton,)))
            killers[-1].start()

    spec = serving(latencyBudgetMs=1000, maxTrials=4)
    result, seconds, _ = run(tmp_path, digits_model, spec, on_trial=kill_during_second_trial)
    for killer in killers:
        killer.join()

    assert seconds < 60  # no hang: the load and every window are bounded
    assert len(result.trials) == 2
    assert result.trials[0].failure is None and result.trials[1].failure is not None
    summary = result.summary
    assert "ServerDied" in summary.message and "exited during trial 2" in summary.message
    assert summary.outcome == "tuned"  # the spec's trial was measured before the kill
    assert summary.settings == result.trials[0].config.settings()


def test_missing_tritonserver_leaves_the_spec_settings(
    tmp_path: Path, digits_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTISERVE_TRITON_HOME", str(tmp_path / "no-triton"))
    result, seconds, _ = run(tmp_path, digits_model, serving(latencyBudgetMs=10))

    assert seconds < 10 and result.trials == [] and result.serving is None
    assert result.summary.outcome == "untuned"
    assert "TritonNotFoundError" in result.summary.message
    assert "incomplete Triton install" in result.summary.message


def test_optimizer_packages_the_tuned_config_with_trials_plot_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("OPTISERVE_TERMINATION_LOG", str(termination))
    model = make_mlp(tmp_path / "mlp.onnx", sizes=(16, 64, 10))
    eval_npz = make_npz(tmp_path / "eval.npz", 32)
    doc = {
        "name": "mlp",
        "source": {"uri": str(model), "format": "onnx"},
        "optimization": {
            "accuracy": {"dataset": str(eval_npz), "metric": "maxAbsError", "maxDrop": 0.5},
            "benchmark": {"batchSizes": [1, 8], "iterations": 3, "warmup": 1},
        },
        "serving": {**HAND, "tuning": {**SHORT, "latencyBudgetMs": 1000, "maxTrials": 2}},
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(doc))

    assert run_optimize(spec_file, tmp_path / "out") == 0

    message = termination.read_text()
    assert len(message.encode()) < 4096
    summary = json.loads(message)
    folder = tmp_path / "out" / summary["digest"]
    report = json.loads((folder / "report.json").read_text())
    tuning = report["tuning"]
    assert len(tuning["trials"]) == 2 and tuning["plot"] == "tuning.png"
    assert (folder / "tuning.png").read_bytes()[:4] == b"\x89PNG"
    chosen = [row for row in tuning["trials"] if row["chosen"]]
    assert len(chosen) == 1
    config = read_config(folder / "model_repository" / "mlp" / "config.pbtxt")
    assert config.max_batch_size == chosen[0]["maxBatchSize"]
    assert config.instance_group[0].count == chosen[0]["instances"]
    assert list(config.dynamic_batching.preferred_batch_size) == chosen[0]["preferredBatchSizes"]
    assert config.dynamic_batching.max_queue_delay_microseconds == chosen[0]["maxQueueDelayUs"]
    assert "Tuning trials" in (folder / "report.html").read_text()
    # The operator reads the search from the termination message into status.serving.tuning.
    parsed = parse_summary(message, summary["digest"], "pvc://claim/x/")
    assert parsed.artifact.tuning is not None
    assert parsed.artifact.tuning.outcome == "tuned" and parsed.artifact.tuning.trials == 2
    assert np.isclose(parsed.artifact.tuning.throughput_rps or 0, chosen[0]["throughputRps"])


def reshape_to_one_row(path: Path) -> Path:
    """A model that answers one request at a time and fails on any batch of two or more: it
    reshapes its input to a single row, which only fits a batch of one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "one_row",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_model_failing_under_load_ends_the_search_untuned(tmp_path: Path) -> None:
    model = reshape_to_one_row(tmp_path / "one_row.onnx")
    spec = ServingSpec.model_validate(
        {
            "maxBatchSize": 8,
            "dynamicBatching": {"maxQueueDelayMicroseconds": 5000},
            "tuning": {**SHORT, "latencyBudgetMs": 1000, "maxTrials": 4},
        }
    )
    repository = tmp_path / "repository"
    write_onnx_model(repository, "one_row", model, spec)
    samples = [{"x": np.full((1, 4), i, dtype=np.float32)} for i in range(8)]
    began = time.monotonic()

    result = search(
        repository, "one_row", onnx_signature(model), spec, "onnxruntime_onnx", samples, print
    )

    assert time.monotonic() - began < 60
    # Batches of two fail in the model: their requests are answered with onnxruntime's error
    # and the server keeps serving (it no longer crashes, see onnx_model.py.tmpl).
    assert len(result.trials) == 1 and result.trials[0].failure is not None
    assert result.summary.outcome == "untuned" and result.serving is None
    message = result.summary.message
    assert "serving with the spec's settings" in message
    assert "requests failed" in message
    assert "reshape" in message.lower()  # the model's own error, from Triton's log


def test_a_plot_that_cannot_be_drawn_does_not_undo_the_search(
    tmp_path: Path, digits_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optiserve_optimizer.tuning import artifact

    def no_matplotlib(*_: Any) -> bytes:
        raise ModuleNotFoundError("No module named 'matplotlib'")

    monkeypatch.setattr(artifact, "plot_png", no_matplotlib)
    spec = serving(latencyBudgetMs=1000, maxTrials=1)
    write_onnx_model(tmp_path, MODEL, digits_model, spec)
    config_text = (tmp_path / MODEL / "config.pbtxt").read_text()
    lines: list[str] = []

    result = artifact.tune_packaged(
        MODEL,
        spec,
        tmp_path / MODEL / "1" / "model.onnx",
        onnx_signature(digits_model),
        "onnxruntime_onnx",
        {"input": np.concatenate([s["input"] for s in digits_samples(16)])},
        config_text,
        lines.append,
    )

    assert result.summary is not None and result.summary.outcome == "tuned"
    assert result.files == {} and result.report is not None and result.report["plot"] is None
    assert len(result.report["trials"]) == 1
    assert any("no tuning.png: ModuleNotFoundError" in line for line in lines)

"""Where the PyTorch baseline runs: on the GPU for a GPU target when torch sees one.

A lent H100 showed why: with the TorchScript baseline on the CPU, the digits TensorRT engine
was reported 67x faster than "pytorch-torchscript", where PyTorch on that same GPU was 2.7x
slower than the engine. The CPU half runs everywhere; the GPU half is a ``gpu`` test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve_optimizer.measure import measure, visible_gpu
from optiserve_optimizer.runners import runner_for, torch_device, torchscript_runner
from tests.optimizer.input_models import two_input


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def test_a_cpu_target_keeps_the_baseline_on_the_cpu() -> None:
    assert torch_device("cpu") == "cpu"


@pytest.mark.skipif(_cuda(), reason="a GPU is visible: the gpu test below covers it")
def test_a_gpu_target_without_a_visible_gpu_falls_back_to_the_cpu(tmp_path: Path) -> None:
    model, data = two_input(tmp_path, 16)
    feed = {k: v for k, v in np.load(data).items() if k in ("a", "b")}
    assert torch_device("gpu") == "cpu"
    on_cpu = torchscript_runner(model, ["a", "b"], "cpu")(feed)
    asked_gpu = torchscript_runner(model, ["a", "b"], "gpu")(feed)
    np.testing.assert_array_equal(on_cpu[0], asked_gpu[0])
    # and the figures say no GPU measured them
    timed = measure(
        {"ts": asked_gpu_runner(model)},
        feed,
        [1, 2],
        warmup=1,
        iterations=2,
        rounds=1,
        threads=1,
        device="gpu",
    )
    assert visible_gpu("gpu") == "" and timed.conditions.gpu == ""
    assert not timed.conditions.line().startswith("GPU")


def asked_gpu_runner(model: Path) -> Any:
    return torchscript_runner(model, ["a", "b"], "gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="no CUDA device visible")
def test_a_gpu_target_times_the_torch_baseline_on_the_gpu(tmp_path: Path) -> None:
    import torch

    model, data = two_input(tmp_path, 64)
    feed = {k: v for k, v in np.load(data).items() if k in ("a", "b")}
    assert torch_device("gpu") == "cuda"
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    baseline = runner_for(model, "gpu", ["a", "b"])  # what baseline_runners times
    assert torch.cuda.memory_allocated() > before  # the module's weights are on the GPU
    on_gpu = baseline(feed)[0]
    assert isinstance(on_gpu, np.ndarray) and on_gpu.shape == (64, 5)  # back in host memory
    on_cpu = torchscript_runner(model, ["a", "b"], "cpu")(feed)[0]
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-4)
    # the figures name the card they were measured on; a CPU target's do not
    timed = measure(
        {"ts": baseline}, feed, [1, 2], warmup=1, iterations=2, rounds=1, threads=1, device="gpu"
    )
    assert timed.conditions.gpu == torch.cuda.get_device_name(0) != ""
    assert timed.conditions.line().startswith(f"GPU {timed.conditions.gpu}; ")
    assert visible_gpu("cpu") == ""

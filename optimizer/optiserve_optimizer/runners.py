"""One way to call any model: ``runner(feed) -> outputs`` for onnxruntime, TorchScript, TensorRT."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.onnx_utils import providers_for, session, threads

Feed = Mapping[str, npt.NDArray[Any]]
Runner = Callable[[Feed], list[npt.NDArray[Any]]]

TORCH_BASELINE = "pytorch-torchscript"
# A huggingface source's eager twin (passes/hf_model.py), or a torch.export program's module.
EAGER_BASELINE = "pytorch-eager"
ORT_BASELINE = "onnxruntime-fp32"  # the exported, unmodified model on onnxruntime
BASELINES = (TORCH_BASELINE, EAGER_BASELINE, ORT_BASELINE)


def onnx_runner(path: Path, device: str = "cpu") -> Runner:
    sess = session(path, providers_for(device))
    names = [i.name for i in sess.get_inputs()]

    def run(feed: Feed) -> list[npt.NDArray[Any]]:
        return list(sess.run(None, {n: feed[n] for n in names}))

    return run


def torch_device(device: str) -> str:
    """Where a PyTorch baseline runs: on the GPU when the target is one and torch sees a CUDA
    device, so that engines are compared with PyTorch on the same device. (Run on the CPU, the
    TorchScript baseline made a TensorRT engine look 67x faster on a lent H100, where eager
    PyTorch on that GPU was 2.7x slower than the engine.) Inputs go to the device and outputs
    come back to host memory in every call, as they do for the TensorRT runner."""
    if device != "gpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torchscript_runner(path: Path, input_names: list[str], device: str = "cpu") -> Runner:
    """PyTorch baseline: the TorchScript source run by torch (the nearest to eager we have)."""
    import torch

    from optiserve_optimizer.passes.torch_export import load_torchscript, torch_outputs

    torch.set_num_threads(threads())
    where = torch_device(device)
    module = load_torchscript(path, "benchmark").to(where)

    def run(feed: Feed) -> list[npt.NDArray[Any]]:
        return torch_outputs(module, {n: feed[n] for n in input_names}, where)

    return run


def transformer_runner(path: Path, device: str = "cpu") -> Runner:
    """PyTorch eager baseline of a huggingface source: its twin (see passes/hf_model.py)."""
    import torch

    from optiserve_optimizer.passes import hf_model, hf_source

    torch.set_num_threads(threads())
    where = torch_device(device)
    module = hf_model.load_twin(path, "benchmark").to(where)

    def run(feed: Feed) -> list[npt.NDArray[Any]]:
        return [hf_source.torch_forward(module, feed, where)]

    return run


def program_runner(path: Path, device: str = "cpu") -> Runner:
    """PyTorch eager baseline of a torch.export source: ``program.module()`` run by torch."""
    import torch

    from optiserve_optimizer.passes import program_export

    torch.set_num_threads(threads())
    program = program_export.load_program(path, "benchmark")
    call = program_export.ProgramModule(program, torch_device(device))

    def run(feed: Feed) -> list[npt.NDArray[Any]]:
        return list(call(feed))

    return run


def runner_for(path: Path, device: str, input_names: list[str]) -> Runner:
    if path.suffix == ".plan":
        from optiserve_optimizer.passes.tensorrt_build import tensorrt_runner

        trt_run: Runner = tensorrt_runner(path)
        return trt_run
    if path.suffix == ".safetensors":
        return transformer_runner(path, device)
    if path.suffix == ".pt2":
        return program_runner(path, device)
    if path.suffix == ".pt":
        return torchscript_runner(path, input_names, device)
    return onnx_runner(path, device)


def baseline_runners(
    source_torch: Path | None, exported_onnx: Path, device: str, input_names: list[str]
) -> tuple[str, dict[str, Runner]]:
    """(the named baseline, its runners): the source in its own framework (TorchScript run by
    torch, a huggingface or torch.export source run eagerly by torch, or an ONNX source run by
    onnxruntime) and onnxruntime FP32 of the exported model beside it, which for an ONNX source
    is the same thing and is timed once."""
    ort = onnx_runner(exported_onnx, device)
    if source_torch is not None:
        name = TORCH_BASELINE if source_torch.suffix == ".pt" else EAGER_BASELINE
        return name, {name: runner_for(source_torch, device, input_names), ORT_BASELINE: ort}
    return ORT_BASELINE, {ORT_BASELINE: ort}


def run_all(runner: Runner, arrays: Feed, batch: int) -> list[npt.NDArray[np.float32]]:
    """Outputs over every sample, in batches, concatenated (float32)."""
    total = len(next(iter(arrays.values())))
    parts = [
        runner({k: v[s : s + batch] for k, v in arrays.items()}) for s in range(0, total, batch)
    ]
    return [np.concatenate([p[i] for p in parts]).astype(np.float32) for i in range(len(parts[0]))]

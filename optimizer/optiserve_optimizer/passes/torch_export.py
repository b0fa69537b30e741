"""TorchScript → ONNX with dynamic batch (and sequence) axes, checked against torch."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.errors import ModelLoadError, PassFailedError

OPSET = 17
TOLERANCE = 1e-3  # relative to the output scale; float reassociation differs between runtimes


def load_torchscript(path: Path, pass_name: str) -> Any:
    import torch

    if not path.is_file():
        raise ModelLoadError(pass_name, f"model file {path} does not exist")
    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(pass_name, f"{path.name} is not a TorchScript file: {exc}") from exc
    return module.eval()


def torch_outputs(module: Any, feed: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
    import torch

    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in feed.values()])
    items = out if isinstance(out, tuple | list) else (out,)
    return [t.detach().numpy().astype(np.float32) for t in items]


def export_onnx(
    module: Any, sample: Mapping[str, npt.NDArray[Any]], out: Path, pass_name: str
) -> list[str]:
    """Exports ``module`` (inputs named like ``sample``'s keys, in order); returns output names.

    Axis 0 of every tensor is the batch; integer inputs of rank >= 2 (token ids, masks) also
    get a dynamic axis 1 (the sequence).
    """
    import torch

    reference = torch_outputs(module, sample)
    output_names = (
        ["output"] if len(reference) == 1 else [f"output_{i}" for i in range(len(reference))]
    )
    dynamic: dict[str, dict[int, str]] = {}
    for name, value in sample.items():
        axes = {0: "batch"}
        if value.ndim >= 2 and np.issubdtype(value.dtype, np.integer):
            axes[1] = "sequence"
        dynamic[name] = axes
    for name in output_names:
        dynamic[name] = {0: "batch"}
    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in sample.values())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(out),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(sample),
                output_names=output_names,
                dynamic_axes=dynamic,
                do_constant_folding=False,  # keep parameter names as initializer names
            )
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise ModelLoadError(pass_name, f"ONNX export failed: {exc}") from exc
    return output_names


def check_export(
    module: Any,
    onnx_path: Path,
    samples: Sequence[Mapping[str, npt.NDArray[Any]]],
    pass_name: str,
) -> float:
    """Largest relative output difference between torch and onnxruntime over ``samples``."""
    from optiserve_optimizer.onnx_utils import compare_outputs, session

    sess = session(onnx_path, level="disable")
    worst = 0.0
    for feed in samples:
        worst = max(worst, compare_outputs(torch_outputs(module, feed), sess.run(None, dict(feed))))
    if worst > TOLERANCE:
        raise PassFailedError(
            pass_name, f"exported ONNX differs from TorchScript by {worst:.3g} (> {TOLERANCE})"
        )
    return worst

"""TorchScript → ONNX with dynamic batch (and sequence) axes, checked against torch.

Inputs are bound by NAME: the names are the forward schema's argument names (``self``
excluded), every feed is a ``{name: array}`` mapping put into the schema's order here, and
the ONNX model gets exactly those inputs, in that order, under those names. ``.npz`` file
order never matters.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.errors import ModelLoadError, short_cause

OPSET = 17


@dataclass(frozen=True)
class Argument:
    name: str
    optional: bool  # has a default value, so a feed may leave it out


def load_torchscript(path: Path, pass_name: str) -> Any:
    import torch

    if not path.is_file():
        raise ModelLoadError(pass_name, f"model file {path} does not exist")
    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            pass_name, f"{path.name} is not a TorchScript file: {short_cause(exc)}"
        ) from exc
    return module.eval()


def forward_arguments(module: Any) -> list[Argument]:
    """The forward method's tensor arguments, in order, as its schema names them."""
    try:
        arguments = list(module.forward.schema.arguments)
    except AttributeError as exc:
        raise ModelLoadError(
            "load_export", "the module's forward has no TorchScript schema"
        ) from exc
    if arguments and arguments[0].name == "self":
        arguments = arguments[1:]
    return [Argument(a.name, bool(a.has_default_value())) for a in arguments]


def input_names(module: Any) -> list[str]:
    return [a.name for a in forward_arguments(module)]


def positional(module: Any, feed: Mapping[str, Any]) -> list[Any]:
    """``feed``'s values in the forward schema's order; trailing optional arguments may be
    missing. Raises ``KeyError`` naming a required argument that ``feed`` lacks."""
    args: list[Any] = []
    missing: list[str] = []
    for argument in forward_arguments(module):
        if argument.name in feed:
            if missing:
                raise KeyError(f"{missing[0]!r} (it comes before {argument.name!r})")
            args.append(feed[argument.name])
        elif argument.optional:
            missing.append(argument.name)
        else:
            raise KeyError(argument.name)
    return args


def call(module: Any, feed: Mapping[str, Any]) -> Any:
    """``module(...)`` with torch tensors bound by name."""
    return module(*positional(module, feed))


def torch_outputs(
    module: Any, feed: Mapping[str, npt.NDArray[Any]], device: str = "cpu"
) -> list[npt.NDArray[Any]]:
    """The module's outputs for a numpy feed; ``device`` is where the module is (inputs go
    there, outputs come back to host memory, as every runner's do)."""
    import torch

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feed.items()}
    with torch.no_grad():
        out = call(module, tensors)
    items = out if isinstance(out, tuple | list) else (out,)
    return [t.detach().cpu().numpy().astype(np.float32) for t in items]


def output_names(count: int) -> list[str]:
    """What the exported model's outputs are called (``expected_<name>`` in the eval data)."""
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def export_onnx(
    module: Any, sample: Mapping[str, npt.NDArray[Any]], out: Path, pass_name: str
) -> list[str]:
    """Exports ``module`` with ``sample`` (bound by name); returns the output names.

    Axis 0 of every tensor is the batch; integer inputs of rank >= 2 (token ids, masks) also
    get a dynamic axis 1 (the sequence). An input the module never reads is put back into the
    graph (the exporter drops it), so the ONNX and served model take what the source takes.
    """

    try:
        reference = torch_outputs(module, sample)
    except Exception as exc:  # torch raises RuntimeError, TypeError, ... for a bad feed
        raise ModelLoadError(
            pass_name, f"the model fails on its sample: {short_cause(exc)}"
        ) from exc
    names = [n for n in input_names(module) if n in sample]
    outputs = output_names(len(reference))
    dynamic: dict[str, dict[int, str]] = {}
    for name in names:
        value = sample[name]
        axes = {0: "batch"}
        if value.ndim >= 2 and np.issubdtype(value.dtype, np.integer):
            axes[1] = "sequence"
        dynamic[name] = axes
    for name in outputs:
        dynamic[name] = {0: "batch"}
    trace_to_onnx(module, sample, names, outputs, dynamic, out, pass_name)
    restore_unused_inputs(out, names, sample, dynamic)
    return outputs


def trace_to_onnx(
    module: Any,
    sample: Mapping[str, npt.NDArray[Any]],
    names: Sequence[str],
    outputs: Sequence[str],
    dynamic: Mapping[str, Mapping[int, str]],
    out: Path,
    pass_name: str,
) -> None:
    """torch's TorchScript-based exporter at our opset, inputs fed from ``sample`` by name;
    any exporter error is a ModelLoadError with its short cause."""
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(out),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(names),
                output_names=list(outputs),
                dynamic_axes={k: dict(v) for k, v in dynamic.items()},
                do_constant_folding=False,  # keep parameter names as initializer names
            )
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise ModelLoadError(pass_name, f"ONNX export failed: {short_cause(exc)}") from exc


def restore_unused_inputs(
    path: Path,
    names: Sequence[str],
    sample: Mapping[str, npt.NDArray[Any]],
    dynamic: Mapping[str, Mapping[int, str]],
) -> list[str]:
    """Adds back the inputs the exporter dropped (unused ones) and orders the graph's inputs
    like ``names``; returns the names added."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    present = {i.name: i for i in model.graph.input}
    added = [n for n in names if n not in present]
    if not added:
        return []
    for name in added:
        value = sample[name]
        dims: list[int | str] = list(value.shape)
        for axis, label in dynamic.get(name, {}).items():
            dims[axis] = label
        elem = helper.np_dtype_to_tensor_dtype(value.dtype)
        present[name] = helper.make_tensor_value_info(name, elem, dims)
    others = [i for i in model.graph.input if i.name not in set(names)]
    ordered = [present[n] for n in names] + others
    del model.graph.input[:]
    model.graph.input.extend(ordered)
    onnx.save(model, str(path))
    return added

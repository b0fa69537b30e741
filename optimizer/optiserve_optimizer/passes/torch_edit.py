"""Editing a TorchScript module's parameters in place: masks and channel slices by name."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.errors import PassFailedError

# name -> ("mask", bool array) | ("slice", ((axis, kept indices), ...))
Edit = tuple[Any, ...]


def _parent(module: Any, dotted: str) -> tuple[Any, str]:
    *path, leaf = dotted.split(".")
    for part in path:
        module = getattr(module, part)
    return module, leaf


def apply_edits(module: Any, edits: Mapping[str, Edit], pass_name: str) -> None:
    """Masks parameters, or replaces parameters and buffers (BatchNorm statistics) by slices."""
    import torch

    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    with torch.no_grad():
        for name, edit in edits.items():
            if name not in params and not (edit[0] == "slice" and name in buffers):
                raise PassFailedError(
                    pass_name,
                    f"ONNX weight {name!r} is not a parameter of the TorchScript module; "
                    "prune the ONNX graph instead (source.format: onnx)",
                )
            tensor = params[name] if name in params else buffers[name]
            if edit[0] == "mask":
                tensor.mul_(torch.from_numpy(edit[1]).to(tensor.dtype))
                continue
            smaller = tensor.detach()
            for axis, keep in edit[1]:
                smaller = torch.index_select(smaller, axis, torch.from_numpy(keep))
            parent, leaf = _parent(module, name)
            if name in params:
                setattr(
                    parent,
                    leaf,
                    torch.nn.Parameter(smaller.clone(), requires_grad=tensor.requires_grad),
                )
            else:
                setattr(parent, leaf, smaller.clone())


def apply_edits_onnx(model: Any, edits: Mapping[str, Edit]) -> None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name not in edits:
            continue
        edit = edits[init.name]
        array = numpy_helper.to_array(init)
        if edit[0] == "mask":
            new: npt.NDArray[Any] = (array * edit[1]).astype(array.dtype)
        else:
            new = array
            for axis, keep in edit[1]:
                new = np.take(new, keep, axis=axis)
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), init.name))
    # Shapes of intermediate tensors changed; let runtimes infer them again.
    del model.graph.value_info[:]


def save_and_export(
    module: Any, pt_out: Path, onnx_out: Path, feed: Mapping[str, npt.NDArray[Any]], pass_name: str
) -> None:
    from optiserve_optimizer.onnx_utils import load_model
    from optiserve_optimizer.passes import torch_export

    module.save(str(pt_out))
    torch_export.export_onnx(module, feed, onnx_out, pass_name)
    load_model(onnx_out, pass_name)

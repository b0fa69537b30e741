"""``torch.export`` programs (``.pt2`` from ``torch.export.save``) as sources.

An ExportedProgram states its inputs exactly: the user inputs' names (the placeholders, named
after ``forward``'s arguments or the keyword arguments it was exported with), dtypes and
shapes, with symbolic dimensions where it was exported with ``Dim``. So the datasets are bound
and checked against the program itself (no probing as for TorchScript), and the ONNX export is
``torch.onnx.export`` of the program (the dynamo exporter), which keeps its symbolic
dimensions; they are renamed ``batch`` / ``sequence`` like every other export's. Feeds are
``{name: array}`` mappings put back into the program's (args, kwargs) structure by its
``in_spec``: ``.npz`` order never matters.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve.model_io import TensorSpec
from optiserve_optimizer.errors import ModelLoadError, short_cause

OPSET = 18  # the dynamo exporter's lowest
BATCH, SEQUENCE = "batch", "sequence"


def load_program(path: Path, pass_name: str) -> Any:
    """The ExportedProgram in ``path``; a ``ModelLoadError`` naming the file when it is none."""
    import torch

    if not path.is_file():
        raise ModelLoadError(pass_name, f"model file {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
    except Exception as exc:  # zipfile, pickle, JSON and version errors alike: not a program
        raise ModelLoadError(
            pass_name,
            f"{path.name} is not a torch.export program (torch.export.save): {short_cause(exc)}",
        ) from exc
    if not isinstance(program, torch.export.ExportedProgram):
        raise ModelLoadError(
            pass_name, f"{path.name} holds a {type(program).__name__}, not an ExportedProgram"
        )
    return program


def _user_placeholders(program: Any) -> list[Any]:
    names = list(program.graph_signature.user_inputs)
    found = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    return [found[name] for name in names if name in found]


def program_inputs(program: Any, pass_name: str) -> tuple[TensorSpec, ...]:
    """The program's user inputs, in its order: names, numpy dtypes, sample shapes (-1 where
    the program has a symbolic dimension). Refuses non-tensor inputs and a static batch."""
    import torch

    specs = []
    placeholders = _user_placeholders(program)
    if len(placeholders) != len(program.graph_signature.user_inputs):
        raise ModelLoadError(pass_name, "the program has user inputs that are not tensors")
    for node in placeholders:
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise ModelLoadError(
                pass_name, f"the program's input {node.name!r} is not a tensor ({type(value)})"
            )
        dims = [-1 if not isinstance(d, int) else d for d in value.shape]
        if not dims or dims[0] != -1:
            raise ModelLoadError(
                pass_name,
                f"the program's input {node.name!r} has the static shape {dims}: export it "
                "with a dynamic batch axis (dynamic_shapes={name: {0: torch.export.Dim(...)}})",
            )
        dtype = str(torch.empty((), dtype=value.dtype).numpy().dtype)
        specs.append(TensorSpec(node.name, dtype, tuple(dims[1:])))
    if not specs:
        raise ModelLoadError(pass_name, "the program takes no tensor inputs")
    return tuple(specs)


def output_count(program: Any) -> int:
    return int(program.call_spec.out_spec.num_leaves)


def output_names(count: int) -> list[str]:
    """As every export names them (``expected_<name>`` in the eval data)."""
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


class ProgramModule:
    """``program.module()`` called with a ``{name: tensor}`` feed; outputs flattened."""

    def __init__(self, program: Any, device: str = "cpu") -> None:
        self.device = device
        self.module = program.module() if device == "cpu" else program.module().to(device)
        self.names = list(program.graph_signature.user_inputs)
        self.in_spec = program.call_spec.in_spec

    def arguments(self, feed: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        from torch.utils import _pytree

        args, kwargs = _pytree.tree_unflatten([feed[n] for n in self.names], self.in_spec)
        return tuple(args), dict(kwargs)

    def __call__(self, feed: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[np.float32]]:
        import torch
        from torch.utils import _pytree

        tensors = {
            n: torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device) for n in self.names
        }
        args, kwargs = self.arguments(tensors)
        with torch.no_grad():
            out = self.module(*args, **kwargs)
        leaves = _pytree.tree_leaves(out)
        return [t.detach().cpu().numpy().astype(np.float32) for t in leaves]


def export_onnx(
    program: Any,
    specs: Sequence[TensorSpec],
    sample: Mapping[str, npt.NDArray[Any]],
    out: Path,
    pass_name: str,
) -> list[str]:
    """The program as ONNX (inputs under the program's names, outputs ``output``/``output_i``),
    its symbolic batch / sequence dimensions kept and named; returns the output names."""
    import torch

    outputs = output_names(output_count(program))
    call = ProgramModule(program)
    args, kwargs = call.arguments({n: torch.from_numpy(sample[n]) for n in call.names})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                program,
                args,
                str(out),
                kwargs=kwargs,
                dynamo=True,
                opset_version=OPSET,
                input_names=list(call.names),
                output_names=outputs,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise ModelLoadError(pass_name, f"ONNX export failed: {short_cause(exc)}") from exc
    name_dimensions(out, specs)
    return outputs


def name_dimensions(path: Path, specs: Sequence[TensorSpec]) -> None:
    """Renames the exporter's symbols (``s18``) ``batch`` and ``sequence`` (axis 1 of integer
    inputs of rank >= 2), as the TorchScript export names them, everywhere in the graph."""
    import onnx

    model = onnx.load(str(path))
    by_name = {s.name: s for s in specs}
    names: dict[str, str] = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        spec = by_name.get(value.name)
        if spec is None or not dims:
            continue
        if dims[0].dim_param:
            names.setdefault(dims[0].dim_param, BATCH)
        integer = np.issubdtype(np.dtype(spec.dtype), np.integer)
        if len(dims) >= 2 and integer and dims[1].dim_param:
            names.setdefault(dims[1].dim_param, SEQUENCE)
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    onnx.save(model, str(path))

"""The source model's inputs, and every dataset the spec names checked against them up front.

Run right after the source is loaded, before any export, training or calibration: a dataset
whose arrays do not match the model's inputs by name, dtype and sample shape is refused with
a ``DataError`` naming the array and the input, instead of a model fed the wrong tensors.
- ONNX source: the inputs (names, dtypes, shapes) are the graph's.
- TorchScript source: the names are ``forward``'s arguments; TorchScript has no dtypes or
  shapes, so the accuracy dataset's are taken, checked by running the model on two samples,
  and every other dataset must match them (integer inputs of rank >= 2 keep a free sequence
  axis, as the export gives them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optiserve.api import OptimizationSpec
from optiserve.model_io import TensorSpec
from optiserve.uri import local_path
from optiserve_optimizer import data, plan
from optiserve_optimizer.errors import DataError

ACCURACY = "accuracy"
BINDING = "inputBinding"  # PassContext.shared key: what the check found (for the report)
# Plan step parameters that name a dataset (the step's name is the role in messages).
_DATASET_PARAMS = ("dataset", "calibration")


@dataclass(frozen=True)
class Dataset:
    """One ``.npz`` the run reads; ``role`` names its first user (the pass in errors)."""

    path: Path
    role: str
    min_samples: int = 1

    @property
    def is_eval(self) -> bool:
        return self.role == ACCURACY


def datasets_of(the_plan: plan.Plan, spec: OptimizationSpec) -> list[Dataset]:
    """The accuracy dataset first, then every other dataset a planned step reads, once each."""
    found = [Dataset(local_path(spec.accuracy.dataset), ACCURACY, max(spec.benchmark.batch_sizes))]
    seen = {found[0].path}
    for candidate in the_plan.candidates:
        for step in candidate.steps:
            for key in _DATASET_PARAMS:
                uri = step.params.get(key)
                if not isinstance(uri, str):
                    continue
                path = local_path(uri)
                if path not in seen:
                    seen.add(path)
                    found.append(Dataset(path, step.name))
    return found


def torchscript_inputs(
    names: Sequence[str], members: Mapping[str, data.MemberInfo]
) -> tuple[TensorSpec, ...]:
    """What a TorchScript model's inputs are, given the eval set that names them all: its
    dtypes, its sample shapes with the sequence axis of integer inputs left free."""
    specs = []
    for name in names:
        if name not in members:
            continue  # an optional argument the data leaves out
        info = members[name]
        shape = list(info.shape[1:])
        if shape and np.issubdtype(info.dtype, np.integer):
            shape[0] = -1  # export_onnx gives such inputs a dynamic sequence axis
        specs.append(TensorSpec(name, str(info.dtype), tuple(shape)))
    return tuple(specs)


def check_datasets(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[str],
    datasets: Sequence[Dataset],
    optional: Sequence[str] = (),
) -> dict[str, int]:
    """Refuses the first dataset that does not fit ``inputs``; returns samples per file name.

    ``optional`` inputs (TorchScript arguments with a default) may be absent from a dataset.
    Reference outputs (``expected_*``) are checked against ``outputs`` in the eval set.
    """
    names = [t.name for t in inputs]
    counts: dict[str, int] = {}
    for dataset in datasets:
        members = data.describe(dataset.path, dataset.role)
        data.check_names(members, [*names, *optional], dataset.path, dataset.role, optional)
        counts[dataset.path.name] = data.check_against(
            dataset.path,
            inputs,
            dataset.role,
            dataset.min_samples,
            outputs=outputs if dataset.is_eval else None,
        )
    return counts


def dtype_hints(module: Any, members: Mapping[str, data.MemberInfo], path: Path) -> str:
    """Why a TorchScript model may fail on floating arrays: their dtype is not its weights'."""
    weights = {
        str(p.dtype).removeprefix("torch.") for p in module.parameters() if p.is_floating_point()
    }
    if len(weights) != 1:
        return ""
    (weight,) = weights
    hints = [
        f"{path.name}[{name!r}] is {info.dtype} but the model's weights are {weight}"
        for name, info in members.items()
        if np.issubdtype(info.dtype, np.floating)
        and str(info.dtype) != weight
        and name != data.LABELS
        and not data.is_reference(name)
    ]
    return ("; " + "; ".join(hints)) if hints else ""


def probe_failure(
    module: Any, members: Mapping[str, data.MemberInfo], path: Path, cause: str
) -> DataError:
    """The ``DataError`` for a TorchScript model that fails on the eval set's first samples."""
    feed = ", ".join(
        f"{n} {i.dtype}{list(i.shape[1:])}"
        for n, i in members.items()
        if n != data.LABELS and not data.is_reference(n)
    )
    return DataError(
        ACCURACY,
        f"the model fails on {path.name}'s first samples ({feed}): {cause}"
        + dtype_hints(module, members, path),
    )

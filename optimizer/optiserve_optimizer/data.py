"""Reading ``.npz`` datasets: checked against the model's inputs, streamed in batches.

The format (every dataset the spec names: accuracy, calibration, recovery, student):
- one array per model input, stored under the input's NAME (first axis = samples). Arrays are
  bound to inputs by name, never by their order in the file. A TorchScript model's inputs
  are its ``forward`` arguments (``forward(self, input_ids, attention_mask)`` takes
  ``input_ids`` and ``attention_mask``); an ONNX model's are its graph inputs;
- optionally ``labels`` (int class ids, one per sample) for ``top1`` and ``finetune``;
- optionally, in the accuracy dataset only, reference outputs the model should give:
  ``expected_<output name>`` per output, or ``expected`` for a single-output model. An ONNX
  model's outputs are its graph outputs; a TorchScript model's are ``output`` (one) or
  ``output_0``, ``output_1``... (a tuple). The original model and every candidate are
  compared with them using the accuracy metric, and must stay within ``maxDrop``.
Any other array is refused (a misspelt input name would otherwise be silently ignored), as
are a missing input, another dtype or another sample shape: before any work, naming both.

``iter_batches`` reads each member's ``.npy`` header and then only ``batch`` rows at a time
from the zip stream, so datasets larger than memory work: nothing here reads a dataset whole.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve.model_io import TensorSpec
from optiserve_optimizer.errors import DataError

LABELS = "labels"
EXPECTED = "expected"  # reference outputs: ``expected`` or ``expected_<output name>``
Arrays = dict[str, npt.NDArray[np.generic]]


@dataclass(frozen=True)
class MemberInfo:
    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]


def _member_header(zf: zipfile.ZipFile, member: str) -> tuple[MemberInfo, int]:
    with zf.open(member) as fh:
        npy: Any = np.lib.format  # untyped module
        version = npy.read_magic(fh)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    if fortran or dtype.hasobject:
        raise ValueError(f"{member}: only C-order, non-object arrays can be streamed")
    return MemberInfo(member.removesuffix(".npy"), dtype, tuple(shape)), offset


def describe(path: Path, pass_name: str) -> dict[str, MemberInfo]:
    """Names, dtypes and shapes of the arrays in ``path`` without reading their data."""
    if not path.is_file():
        raise DataError(pass_name, f"dataset {path} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            return {
                info.name: info
                for info in (_member_header(zf, m)[0] for m in zf.namelist() if m.endswith(".npy"))
            }
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataError(pass_name, f"dataset {path} is not a readable .npz: {exc}") from exc


def is_reference(name: str) -> bool:
    return name == EXPECTED or name.startswith(EXPECTED + "_")


def reference_arrays(
    members: Mapping[str, MemberInfo] | Sequence[str], outputs: Sequence[str], path: Path, role: str
) -> dict[str, str]:
    """``{output name: array name}`` of the reference outputs in a dataset; a reference for no
    output of the model is a ``DataError`` naming both."""
    found: dict[str, str] = {}
    for name in members:
        if not is_reference(name):
            continue
        if name == EXPECTED:
            if len(outputs) != 1:
                raise DataError(
                    role,
                    f"{path.name}[{EXPECTED!r}] is ambiguous: the model has {len(outputs)} "
                    f"outputs; name each {EXPECTED}_<output> ({', '.join(outputs)})",
                )
            output = outputs[0]
        else:
            output = name.removeprefix(EXPECTED + "_")
            if output not in outputs:
                raise DataError(
                    role,
                    f"{path.name}[{name!r}] is a reference for output {output!r}, which the "
                    f"model does not have (its outputs: {', '.join(outputs)})",
                )
        if output in found:
            raise DataError(role, f"{path.name} holds two references for output {output!r}")
        found[output] = name
    return found


def check_names(
    members: Mapping[str, MemberInfo] | Sequence[str],
    inputs: Sequence[str],
    path: Path,
    role: str,
    optional: Sequence[str] = (),
) -> None:
    """Every input has an array and every array is an input, ``labels`` or a reference."""
    for name in inputs:
        if name not in members and name not in optional:
            raise DataError(
                role,
                f"{path.name} has no array {name!r} for the model input {name!r}; it has "
                f"{sorted(members)}",
            )
    unknown = sorted(n for n in members if n not in inputs and n != LABELS and not is_reference(n))
    if unknown:
        raise DataError(
            role,
            f"{path.name} holds array(s) {unknown} that are no input of the model (its inputs: "
            f"{', '.join(inputs)}; besides them an .npz may hold {LABELS!r} and "
            f"{EXPECTED}_<output>)",
        )


def check_against(
    path: Path,
    inputs: Sequence[TensorSpec],
    pass_name: str,
    min_samples: int = 1,
    *,
    exact: bool = False,
    outputs: Sequence[str] | None = None,
) -> int:
    """Fails with a ``DataError`` naming the array and the input unless every input matches;
    returns N. ``exact`` also refuses arrays that are no input (see ``check_names``);
    ``outputs`` checks the reference arrays' names against the model's outputs."""
    members = describe(path, pass_name)
    names = [spec.name for spec in inputs]
    if exact:
        check_names(members, names, path, pass_name)
    if outputs is not None:
        reference_arrays(members, outputs, path, pass_name)
    counts: set[int] = set()
    for spec in inputs:
        info = members.get(spec.name)
        if info is None:
            raise DataError(
                pass_name,
                f"{path.name} has no array {spec.name!r} for the model input {spec.name!r}; it "
                f"has {sorted(members)}",
            )
        if info.dtype != np.dtype(spec.dtype):
            raise DataError(
                pass_name,
                f"{path.name}[{spec.name!r}] is {info.dtype}, the model input {spec.name!r} "
                f"needs {spec.dtype}",
            )
        want = spec.shape
        got = info.shape[1:]
        if len(got) != len(want) or any(w not in (-1, g) for w, g in zip(want, got, strict=False)):
            raise DataError(
                pass_name,
                f"{path.name}[{spec.name!r}] has sample shape {list(got)}, the model input "
                f"{spec.name!r} needs {['?' if d == -1 else d for d in want]}",
            )
        counts.add(info.shape[0])
    for name, info in members.items():
        if name == LABELS or is_reference(name):
            counts.add(info.shape[0] if info.shape else -1)
    if len(counts) > 1:
        raise DataError(pass_name, f"{path.name}: arrays have different sample counts {counts}")
    n = counts.pop() if counts else 0
    if n < min_samples:
        raise DataError(
            pass_name, f"{path.name} has {n} samples, fewer than the batch size {min_samples}"
        )
    return n


def _read_rows(
    fh: Any, info: MemberInfo, rows: int, path: Path, role: str
) -> npt.NDArray[np.generic]:
    """The next ``rows`` rows of one member, read into a fresh (writable) array."""
    out = np.empty((rows, *info.shape[1:]), dtype=info.dtype)
    view = memoryview(out.data).cast("B")
    filled = 0
    while filled < len(view):
        got = fh.readinto(view[filled:])
        if not got:
            raise DataError(
                role, f"{path.name}[{info.name!r}] ends before its {info.shape[0]} rows"
            )
        filled += got
    return out


def _open_members(
    zf: zipfile.ZipFile, names: Sequence[str], path: Path, role: str
) -> tuple[dict[str, Any], dict[str, MemberInfo]]:
    streams: dict[str, Any] = {}
    infos: dict[str, MemberInfo] = {}
    try:
        for name in names:
            info, offset = _member_header(zf, f"{name}.npy")
            fh = zf.open(f"{name}.npy")
            fh.read(offset)
            streams[name], infos[name] = fh, info
    except (ValueError, KeyError, zipfile.BadZipFile) as exc:
        for fh in streams.values():
            fh.close()
        raise DataError(
            role,
            f"{path.name} cannot be streamed ({exc}); save each array C-ordered with a plain "
            "dtype, e.g. np.savez(path, name=np.ascontiguousarray(array))",
        ) from exc
    return streams, infos


def iter_batches(
    path: Path, names: Sequence[str], batch: int, limit: int | None = None, role: str = "data"
) -> Iterator[Arrays]:
    """Yields dicts of ``batch`` rows (the last may be shorter), at most ``limit`` rows in all.

    Only one batch of each array is in memory at a time, whether the ``.npz`` is stored
    (``np.savez``) or deflated (``np.savez_compressed``); an array that cannot be read in rows
    (Fortran order, Python objects) is a ``DataError`` saying how to save it."""
    with zipfile.ZipFile(path) as zf:
        streams, infos = _open_members(zf, names, path, role)
        try:
            total = min((info.shape[0] if info.shape else 0) for info in infos.values())
            if limit is not None:
                total = min(total, limit)
            done = 0
            while done < total:
                rows = min(batch, total - done)
                yield {n: _read_rows(fh, infos[n], rows, path, role) for n, fh in streams.items()}
                done += rows
        finally:
            for fh in streams.values():
                fh.close()


def head(path: Path, names: Sequence[str], rows: int, role: str = "data") -> Arrays:
    """The first ``rows`` rows of each named array that the file holds, read from the stream
    (the rest of the file is never read); fewer when the file has fewer."""
    members = describe(path, role)
    present = [n for n in names if n in members]
    first = next(iter_batches(path, present, max(rows, 1), rows, role), None)
    if first is not None:
        return first
    return {n: np.empty((0, *members[n].shape[1:]), members[n].dtype) for n in present}


def load(path: Path, names: Sequence[str], limit: int) -> Arrays:
    """The first ``limit`` rows of the named arrays the file holds (``head``). Nothing reads
    a dataset whole: what needs every row reads them in batches (``iter_batches``)."""
    return head(path, names, limit)

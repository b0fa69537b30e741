"""The TensorRT build's decisions as plain data, testable without TensorRT or a GPU.

``tensorrt_build`` applies them to the real builder. What lives here:

- the optimization profile: min/opt/max per dynamic input, checked against the network's
  input shapes before any builder exists;
- the builder settings: flags (by ``trt.BuilderFlag`` member name) and the workspace limit;
  TensorRT 11 builds strongly typed networks only (the FP16/INT8 builder flags are gone), so
  the precision is the graph's own: FP16 needs an FP16 graph, INT8 a graph with Q/DQ nodes,
  and ``check_graph_precision`` refuses a mismatch before the build;
- the timing-cache file: TensorRT's serialized cache behind a header naming the TensorRT
  version, the GPU's compute capability and the payload's sha256, so a corrupt, truncated or
  foreign file is detected here and the build runs cold instead of failing or, worse, loading
  timings measured on another GPU class. Files are replaced atomically;
- the reason TensorRT gives when it cannot create a builder (no GPU, old driver).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from optiserve_optimizer.errors import PassFailedError
from optiserve_optimizer.settings import PassConfig, TensorRTSettings

NAME = "tensorrt"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class ShapeRange:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class ProfilePlan:
    """One optimization profile: a shape range per dynamic input, in network input order."""

    shapes: tuple[tuple[str, ShapeRange], ...]

    def to_wire(self) -> dict[str, dict[str, list[int]]]:
        return {
            name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
            for name, r in self.shapes
        }


def plan_profile(
    inputs: Sequence[tuple[str, Sequence[int]]],
    profiles: Mapping[str, Mapping[str, Sequence[int]]],
) -> ProfilePlan:
    """The profile for a network whose inputs are ``(name, shape)`` with -1 for dynamic axes.

    Every dynamic input needs a range; a range must have the input's rank, match its fixed
    axes and satisfy 1 <= min <= opt <= max on every axis. Ranges given for static inputs
    are ignored (the ``shapes`` pass derives one for every input); one for a name the network
    does not have is an error (a typo in the spec would otherwise be silently dropped).
    """
    names = [name for name, _ in inputs]
    unknown = sorted(set(profiles) - set(names))
    if unknown:
        raise PassFailedError(
            NAME, f"shape profiles name inputs the model does not have: {unknown} (has {names})"
        )
    planned: list[tuple[str, ShapeRange]] = []
    for name, shape in inputs:
        dims = tuple(int(d) for d in shape)
        if all(d >= 0 for d in dims):
            continue
        if name not in profiles:
            raise PassFailedError(
                NAME, f"no shape profile for dynamic input {name} {list(dims)} (set it in the spec)"
            )
        given = profiles[name]
        try:
            lo, mid, hi = (tuple(int(v) for v in given[key]) for key in ("min", "opt", "max"))
        except (KeyError, TypeError, ValueError) as exc:
            raise PassFailedError(NAME, f"profile of {name} needs integer min/opt/max") from exc
        where = (
            f"profile of {name} (shape {list(dims)}): min {list(lo)} opt {list(mid)} max {list(hi)}"
        )
        if not len(lo) == len(mid) == len(hi) == len(dims):
            raise PassFailedError(NAME, f"{where}: every shape must have rank {len(dims)}")
        for axis, (fixed, a, b, c) in enumerate(zip(dims, lo, mid, hi, strict=True)):
            if fixed >= 0 and not a == b == c == fixed:
                raise PassFailedError(NAME, f"{where}: axis {axis} is fixed at {fixed}")
            if not 1 <= a <= b <= c:
                raise PassFailedError(NAME, f"{where}: axis {axis} needs 1 <= min <= opt <= max")
        planned.append((name, ShapeRange(lo, mid, hi)))
    return ProfilePlan(tuple(planned))


@dataclass(frozen=True)
class BuildSettings:
    precision: str
    flags: tuple[str, ...]  # trt.BuilderFlag member names
    workspace_bytes: int
    timing_cache: bool


def build_settings(config: PassConfig) -> BuildSettings:
    """The builder configuration a step's settings ask for (``TensorRTSettings`` checks the
    values: a precision TensorRT cannot build or a workspace under 1 MiB is a ``SettingsError``)."""
    settings = TensorRTSettings.of(config, NAME)
    flags = ["SPARSE_WEIGHTS"] if settings.sparse_weights else []
    return BuildSettings(
        precision=settings.precision,
        flags=tuple(flags),
        workspace_bytes=settings.workspace_mib << 20,
        timing_cache=settings.timing_cache,
    )


def check_graph_precision(precision: str, float_types: Iterable[str], ops: Iterable[str]) -> None:
    """A strongly typed build runs the graph's own types: refuse a graph that cannot give
    ``precision`` (``float_types``: the element types of its float tensors, e.g. FLOAT16)."""
    types, op_types = set(float_types), set(ops)
    if precision == "fp16" and "FLOAT16" not in types:
        raise PassFailedError(
            NAME,
            "precision fp16 needs an FP16 graph (TensorRT 11 builds strongly typed networks): "
            "put a quantize(precision=fp16) step before this one",
        )
    if precision == "int8" and not op_types & QDQ_OPS:
        raise PassFailedError(
            NAME,
            "precision int8 needs a graph with QuantizeLinear/DequantizeLinear nodes (explicit "
            "quantization): put a static int8 quantize step with calibration data first",
        )


# ---- the timing-cache file ------------------------------------------------------------------

CACHE_FORMAT = "optiserve-tensorrt-timing-cache/1"


def timing_cache_path(root: Path, tensorrt_version: str, capability: str) -> Path:
    """One file per TensorRT version and GPU class: timings do not transfer between them."""
    return root / f"trt{tensorrt_version}-sm{capability.replace('.', '')}.cache"


def encode_timing_cache(payload: bytes, tensorrt_version: str, capability: str) -> bytes:
    header = {
        "format": CACHE_FORMAT,
        "tensorrt": tensorrt_version,
        "computeCapability": capability,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    return json.dumps(header, sort_keys=True).encode() + b"\n" + payload


@dataclass(frozen=True)
class CacheRead:
    payload: bytes  # b"" when cold
    status: str  # "warm", or "cold: <why>"

    @property
    def warm(self) -> bool:
        return self.status == "warm"


def decode_timing_cache(blob: bytes, tensorrt_version: str, capability: str) -> CacheRead:
    head, newline, payload = blob.partition(b"\n")
    try:
        header = json.loads(head) if newline else None
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
        return CacheRead(b"", "cold: the cache file is not an optiserve timing cache")
    if header.get("tensorrt") != tensorrt_version:
        return CacheRead(b"", f"cold: the cache is from TensorRT {header.get('tensorrt')}")
    if header.get("computeCapability") != capability:
        return CacheRead(b"", f"cold: the cache is for sm {header.get('computeCapability')}")
    if header.get("bytes") != len(payload) or header.get("sha256") != (
        hashlib.sha256(payload).hexdigest()
    ):
        return CacheRead(b"", "cold: the cache file is corrupt (size or sha256 differ)")
    return CacheRead(payload, "warm")


def read_timing_cache(path: Path, tensorrt_version: str, capability: str) -> CacheRead:
    """The cache's payload for this TensorRT and GPU class, or why the build runs cold."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return CacheRead(b"", "cold: no cache file yet")
    except OSError as exc:
        return CacheRead(b"", f"cold: the cache file cannot be read ({exc.strerror})")
    return decode_timing_cache(blob, tensorrt_version, capability)


def write_timing_cache(path: Path, payload: bytes, tensorrt_version: str, capability: str) -> None:
    """Atomically: a build killed mid-write leaves the previous cache or none, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(encode_timing_cache(payload, tensorrt_version, capability))
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- no GPU ---------------------------------------------------------------------------------

_CUDA_ERROR = re.compile(r"cudaError (\d+): ([^)]+)")


_MISSING_LIBRARY = re.compile(r"Unable to load library: ([\w.+-]+)")


def builder_failure_message(tensorrt_version: str, messages: Sequence[str]) -> str:
    """Why TensorRT could not create a builder, from what it logged.

    A library TensorRT could not load is an incomplete install, not a missing GPU: TensorRT 10+
    opens a per-architecture kernel library (libnvinfer_builder_resource_sm90 on an H100) that
    NVIDIA's packages ship and some redistributions leave out; seen on a lent H100 with the
    Maven Central redist. Anything else is reported as the GPU being unusable, with the cause.
    """
    # NVIDIA's libraries wheel is named by the CUDA major the release is built with.
    major = tensorrt_version.split(".")[0]
    cuda = "cu12" if major.isdigit() and int(major) < 11 else "cu13"
    for message in reversed(messages):
        missing = _MISSING_LIBRARY.search(message)
        if missing:
            return (
                f"incomplete TensorRT install: TensorRT {tensorrt_version} could not load "
                f"{missing.group(1)}, which its builder needs for this GPU (NVIDIA's "
                f"tensorrt-{cuda}-libs package ships it)"
            )
    return (
        f"no usable CUDA GPU: TensorRT {tensorrt_version} could not create a builder "
        f"({builder_failure_reason(messages)})"
    )


def builder_failure_reason(messages: Sequence[str]) -> str:
    """What TensorRT logged when it could not create a builder, in one short clause."""
    for message in reversed(messages):
        found = _CUDA_ERROR.search(message)
        if found:
            return f"CUDA error {found.group(1)}: {found.group(2).strip()}"
    if messages:
        return messages[-1].strip()[:300]
    return "TensorRT logged no reason"

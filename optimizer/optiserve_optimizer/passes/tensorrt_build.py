"""ONNX → serialized TensorRT engine (tensorrt Python API). Needs a GPU.

The decisions (profile, flags, timing-cache file, precision checks) are plain data made in
``tensorrt_config``; this module applies them to TensorRT's builder. TensorRT 11 builds
strongly typed networks: FP16 comes from an FP16 graph (the plan puts a quantize(fp16) step
first) and INT8 from explicit Q/DQ nodes (a static, symmetric quantize step with calibration
data); the builder keeps the graph's types. One optimization profile covers every dynamic
input (from the spec, or derived from the eval data by the ``shapes`` pass). The builder's
timing cache is kept beside the artifacts, keyed by TensorRT version and GPU compute
capability, and reused by the next build on that class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import MissingDependencyError, PassFailedError, UnsupportedOpError
from optiserve_optimizer.passes.tensorrt_config import (
    NAME,
    BuildSettings,
    ProfilePlan,
    build_settings,
    builder_failure_message,
    builder_failure_reason,
    check_graph_precision,
    plan_profile,
    read_timing_cache,
    timing_cache_path,
    write_timing_cache,
)
from optiserve_optimizer.settings import PassConfig, TensorRTSettings

if TYPE_CHECKING:
    import tensorrt as trt


def require_tensorrt(pass_name: str = NAME) -> str:
    """TensorRT's version; a typed error when the package or its libraries are missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError(
            pass_name, f"the tensorrt Python package is not installed ({exc})"
        ) from exc
    return tensorrt.__version__


class _Logger:
    """Forwards TensorRT's messages to the progress log and keeps its errors (for reasons)."""

    def __init__(self, show: Callable[[str], None]) -> None:
        import tensorrt

        class Collecting(tensorrt.ILogger):
            def __init__(self) -> None:
                tensorrt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: tensorrt.ILogger.Severity, msg: str) -> None:
                if severity <= tensorrt.ILogger.Severity.ERROR:
                    self.errors.append(msg)
                if severity <= tensorrt.ILogger.Severity.WARNING:
                    show(f"TensorRT: {msg}")

        self.trt_logger = Collecting()

    @property
    def errors(self) -> list[str]:
        errors: list[str] = getattr(self.trt_logger, "errors", [])
        return errors


def create_builder(logger: _Logger, pass_name: str = NAME) -> trt.Builder:
    """A builder, or a typed error saying why TensorRT cannot use a GPU here."""
    import tensorrt

    try:
        return tensorrt.Builder(logger.trt_logger)
    except TypeError as exc:  # pybind11: "factory function returned nullptr"; the log says why
        raise MissingDependencyError(
            pass_name, builder_failure_message(tensorrt.__version__, logger.errors)
        ) from exc


def gpu_capability(pass_name: str = NAME) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor'); fails when there is no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise MissingDependencyError(pass_name, "no CUDA device is visible (TensorRT needs one)")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def preflight(show: Callable[[str], None]) -> MissingDependencyError | None:
    """Before any work: why TensorRT cannot build here, or None when it can.

    No CUDA device at all raises: the run's target is a GPU (the API requires it for
    TensorRT), so nothing could be measured where it will serve, and the run stops (exit 3)
    before any work. A GPU that TensorRT cannot use (the package or its libraries missing, a
    driver older than TensorRT's CUDA) is returned: the TensorRT candidates fail alone with
    this reason and the others are built and measured on the GPU.
    """
    try:
        require_tensorrt()
        create_builder(_Logger(show))
        gpu_capability()
    except MissingDependencyError as exc:
        if not cuda_device_visible():
            raise
        return exc
    return None


def cuda_device_visible() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def graph_types(onnx_path: Path) -> tuple[set[str], set[str]]:
    """(element types of the graph's initializers and typed values, its op types)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    elem = {i.data_type for i in graph.initializer}
    for value in (*graph.input, *graph.output, *graph.value_info):
        elem.add(value.type.tensor_type.elem_type)
    names = {onnx.TensorProto.DataType.Name(t) for t in elem if t}
    return names, {node.op_type for node in graph.node}


def apply_settings(config: trt.IBuilderConfig, settings: BuildSettings) -> None:
    import tensorrt

    config.set_memory_pool_limit(tensorrt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    for flag in settings.flags:
        config.set_flag(tensorrt.BuilderFlag.__members__[flag])


def apply_profile(profile: trt.IOptimizationProfile, plan: ProfilePlan) -> None:
    import tensorrt

    for name, shape in plan.shapes:
        profile.set_shape(
            name, tensorrt.Dims(shape.min), tensorrt.Dims(shape.opt), tensorrt.Dims(shape.max)
        )


def network_inputs(network: trt.INetworkDefinition) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (network.get_input(i).name, tuple(int(d) for d in network.get_input(i).shape))
        for i in range(network.num_inputs)
    ]


def _profiles(settings: TensorRTSettings, ctx: PassContext) -> dict[str, dict[str, list[int]]]:
    """The spec's profiles, else those the ``shapes`` pass derived from the eval data."""
    return dict(settings.profiles) or dict(ctx.shared.get("profiles", {}))


class TensorRTBuild:
    name = NAME
    settings_type = TensorRTSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        typed = TensorRTSettings.of(config, NAME)
        settings = build_settings(typed)
        check_graph_precision(settings.precision, *graph_types(artifact.onnx))
        version = require_tensorrt()
        import tensorrt

        logger = _Logger(ctx.progress.line)
        builder = create_builder(logger)
        gpu, capability = gpu_capability()
        strongly_typed = 1 << int(tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(strongly_typed)
        parser = tensorrt.OnnxParser(network, logger.trt_logger)
        if not parser.parse(artifact.onnx.read_bytes()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise UnsupportedOpError(NAME, f"TensorRT's ONNX parser refused the model: {errors}")
        profile_plan = plan_profile(network_inputs(network), _profiles(typed, ctx))
        build = builder.create_builder_config()
        apply_settings(build, settings)
        profile = builder.create_optimization_profile()
        apply_profile(profile, profile_plan)
        build.add_optimization_profile(profile)
        cache_path = timing_cache_path(ctx.work_dir.parent / "timing-cache", version, capability)
        cache = read_timing_cache(cache_path, version, capability)
        if not settings.timing_cache:
            cache = type(cache)(b"", "cold: timingCache is off")
        timing = build.create_timing_cache(cache.payload)
        if not build.set_timing_cache(timing, ignore_mismatch=False):
            # TensorRT refused what our header accepted (e.g. a driver change): start empty.
            cache = type(cache)(b"", "cold: TensorRT refused the cached timings")
            build.set_timing_cache(build.create_timing_cache(b""), ignore_mismatch=False)
        engine = builder.build_serialized_network(network, build)
        if engine is None:
            raise PassFailedError(
                NAME, f"TensorRT could not build an engine: {builder_failure_reason(logger.errors)}"
            )
        if settings.timing_cache:
            payload = bytes(build.get_timing_cache().serialize())
            write_timing_cache(cache_path, payload, version, capability)
        out = ctx.output(artifact, "model.plan")
        out.write_bytes(bytes(engine))
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, plan=out, precision=settings.precision),
            {
                "tensorrt": version,
                "gpu": gpu,
                "computeCapability": capability,
                "timingCache": cache.status,
                "timingCacheReused": cache.warm,
                "profiles": profile_plan.to_wire(),
                "flags": list(settings.flags),
                "bytes": out.stat().st_size,
            },
        )


def tensorrt_runner(path: Path) -> Callable[[Mapping[str, npt.NDArray[Any]]], list[Any]]:
    """Runs a serialized engine with torch CUDA tensors as buffers; returns numpy outputs."""
    require_tensorrt("benchmark")
    import tensorrt
    import torch

    logger = _Logger(lambda _line: None)
    runtime = tensorrt.Runtime(logger.trt_logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        reason = builder_failure_reason(logger.errors)
        raise PassFailedError("benchmark", f"TensorRT cannot load {path.name}: {reason}")
    context = engine.create_execution_context()
    keep_alive = (logger, runtime, engine)  # TensorRT holds raw pointers to these
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == tensorrt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    out_dtypes = {
        n: torch.from_numpy(np.empty(0, dtype=tensorrt.nptype(engine.get_tensor_dtype(n)))).dtype
        for n in outputs
    }
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def run(feed: Mapping[str, npt.NDArray[Any]]) -> list[Any]:
        assert keep_alive
        held = []
        for name in inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feed[name])).cuda()
            context.set_input_shape(name, tensorrt.Dims(tuple(tensor.shape)))
            context.set_tensor_address(name, tensor.data_ptr())
            held.append(tensor)
        results = []
        for name in outputs:
            shape = tuple(context.get_tensor_shape(name))
            tensor = torch.empty(shape, dtype=out_dtypes[name], device="cuda")
            context.set_tensor_address(name, tensor.data_ptr())
            results.append(tensor)
        if not context.execute_async_v3(stream.cuda_stream):
            raise PassFailedError("benchmark", f"TensorRT failed to run {path.name}")
        stream.synchronize()
        return [t.cpu().numpy() for t in results]

    return run

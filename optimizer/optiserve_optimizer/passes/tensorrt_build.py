"""ONNX → serialized TensorRT engine (tensorrt Python API). GPU only.

FP16 and sparse-weight flags map to builder flags. INT8 uses explicit quantization: the plan
puts a static QDQ quantization step before this one, because TensorRT 10 deprecated implicit
(calibrator) INT8. One optimization profile covers every dynamic input (from the spec, or
derived by the ``shapes`` pass). The builder's timing cache is kept beside the artifacts, keyed
by TensorRT version and GPU compute capability, and reused by the next build on that class.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import MissingDependencyError, PassFailedError, UnsupportedOpError
from optiserve_optimizer.settings import PassConfig, TensorRTSettings

NAME = "tensorrt"


def import_tensorrt(pass_name: str = NAME) -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(
            pass_name, f"the tensorrt Python package is not installed ({exc})"
        ) from exc
    return trt


def gpu_capability(pass_name: str = NAME) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor'); fails when there is no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise MissingDependencyError(pass_name, "no CUDA device is visible (TensorRT needs one)")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def _profiles(settings: TensorRTSettings, ctx: PassContext) -> dict[str, dict[str, list[int]]]:
    return dict(settings.profiles) or dict(ctx.shared.get("profiles", {}))


class TensorRTBuild:
    name = NAME
    settings_type = TensorRTSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        settings = TensorRTSettings.of(config, NAME)
        trt = import_tensorrt()
        gpu, capability = gpu_capability()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(artifact.onnx.read_bytes()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise UnsupportedOpError(NAME, f"TensorRT's ONNX parser refused the model: {errors}")
        build = builder.create_builder_config()
        build.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
        precision = settings.precision
        if precision == "fp16":
            build.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            build.set_flag(trt.BuilderFlag.INT8)
            build.set_flag(trt.BuilderFlag.FP16)  # layers left unquantized run in fp16
        if settings.sparse_weights:
            build.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
        profiles = _profiles(settings, ctx)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if -1 in tuple(tensor.shape):
                if tensor.name not in profiles:
                    raise PassFailedError(NAME, f"no shape profile for dynamic input {tensor.name}")
                shape = profiles[tensor.name]
                profile.set_shape(tensor.name, shape["min"], shape["opt"], shape["max"])
        build.add_optimization_profile(profile)
        cache_path = (
            ctx.work_dir.parent
            / "timing-cache"
            / f"trt{trt.__version__}-sm{capability.replace('.', '')}.cache"
        )
        cache_hit = settings.timing_cache and cache_path.is_file()
        cache = build.create_timing_cache(cache_path.read_bytes() if cache_hit else b"")
        build.set_timing_cache(cache, ignore_mismatch=False)
        engine = builder.build_serialized_network(network, build)
        if engine is None:
            raise PassFailedError(NAME, "TensorRT could not build an engine (see the log above)")
        if settings.timing_cache:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(bytes(build.get_timing_cache().serialize()))
        out = ctx.output(artifact, "model.plan")
        out.write_bytes(bytes(engine))
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, plan=out, precision=precision),
            {
                "tensorrt": trt.__version__,
                "gpu": gpu,
                "computeCapability": capability,
                "timingCacheReused": cache_hit,
                "profiles": profiles,
                "bytes": out.stat().st_size,
            },
        )


def tensorrt_runner(path: Path) -> Any:
    """Runs a serialized engine with torch CUDA tensors as buffers; returns numpy outputs."""
    import torch

    trt = import_tensorrt("benchmark")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def run(feed: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        held = []
        for name in inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feed[name])).cuda()
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
            held.append(tensor)
        results = []
        for name in outputs:
            shape = tuple(context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name))))
            tensor = torch.empty(shape, dtype=dtype.dtype, device="cuda")
            context.set_tensor_address(name, tensor.data_ptr())
            results.append(tensor)
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return [t.cpu().numpy() for t in results]

    return run

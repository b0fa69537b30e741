"""Triton Inference Server: a model's ``config.pbtxt`` and the server's command line.

Pure: spec and signature in, text and argument lists out; nothing is read or written here.
The text is Triton's protobuf text format for ``inference.ModelConfig`` (model_config.proto);
the tests parse every rendering with the real message definitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from optiserve.api.serving import QueuePolicy, ServingSpec
from optiserve.model_io import ModelSignature, TensorSpec

TritonPlatform = Literal["onnxruntime_onnx", "tensorrt_plan", "python"]
ModelControlMode = Literal["none", "poll", "explicit"]
PLATFORMS: tuple[TritonPlatform, ...] = ("onnxruntime_onnx", "tensorrt_plan", "python")

# numpy dtype spelling (as in TensorSpec.dtype) -> Triton's DataType enum.
TRITON_DTYPES: Mapping[str, str] = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "bytes": "TYPE_STRING",
    "object": "TYPE_STRING",
    "string": "TYPE_STRING",
}

# A dynamic dimension (-1) in the warmup sample gets this size: the smallest real request.
WARMUP_DYNAMIC_DIM = 1


class TritonConfigError(ValueError):
    """The signature and serving spec cannot be expressed as a valid Triton model config."""


def triton_dtype(numpy_dtype: str) -> str:
    """``"float32"`` -> ``"TYPE_FP32"``; a typed error for a dtype Triton has no name for."""
    try:
        return TRITON_DTYPES[numpy_dtype]
    except KeyError:
        known = ", ".join(sorted(TRITON_DTYPES))
        raise TritonConfigError(
            f"dtype {numpy_dtype!r} has no Triton type; known: {known}"
        ) from None


def wire_dtype(numpy_dtype: str) -> str | None:
    """The KServe v2 protocol's datatype for a numpy dtype (``"float32"`` -> ``"FP32"``), from the
    same table as config.pbtxt: the protocol spells TYPE_STRING as BYTES. None when unknown."""
    config_type = TRITON_DTYPES.get(numpy_dtype)
    if config_type is None:
        return None
    name = config_type.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def render_model_config(
    name: str,
    signature: ModelSignature,
    serving: ServingSpec,
    platform: TritonPlatform,
    *,
    warmup_shapes: Mapping[str, Sequence[int]] | None = None,
) -> str:
    """The ``config.pbtxt`` of model ``name``.

    A signature with ``batched=False`` renders ``max_batch_size: 0`` and no dynamic batcher,
    whatever the spec asks: the model itself cannot take a batch dimension. ``warmup_shapes``
    overrides the warmup sample's dims per input (without the batch dimension), e.g. to stay
    inside a TensorRT optimization profile; otherwise dynamic dims warm up at size 1.
    """
    _check_name(name)
    if platform not in PLATFORMS:
        raise TritonConfigError(f"platform {platform!r} is not one of {', '.join(PLATFORMS)}")
    if not signature.inputs or not signature.outputs:
        raise TritonConfigError(f"model {name!r} needs at least one input and one output")
    if platform == "tensorrt_plan" and serving.instance_group.kind == "KIND_CPU":
        raise TritonConfigError("a TensorRT plan runs on a GPU only; instanceGroup.kind KIND_CPU")

    max_batch_size = serving.max_batch_size if signature.batched else 0
    # The spec asks for no server-side batch but the model has one: the batch dimension then
    # becomes an ordinary dynamic dimension of every tensor.
    leading: tuple[int, ...] = (-1,) if signature.batched and max_batch_size == 0 else ()

    lines = [f"name: {_quote(name)}"]
    if platform == "python":
        lines.append(f"backend: {_quote('python')}")
    else:
        lines.append(f"platform: {_quote(platform)}")
    lines.append(f"max_batch_size: {max_batch_size}")
    lines += ["version_policy {", "  latest {", "    num_versions: 1", "  }", "}"]
    lines += _tensors("input", signature.inputs, leading)
    lines += _tensors("output", signature.outputs, leading)
    lines += _instance_group(serving)
    if max_batch_size > 0 and serving.dynamic_batching.enabled:
        lines += _dynamic_batching(serving, max_batch_size)
    if serving.response_cache.enabled:
        lines += ["response_cache {", "  enable: true", "}"]
    if platform == "tensorrt_plan" and serving.cuda_graphs:
        lines += ["optimization {", "  cuda {", "    graphs: true", "  }", "}"]
    lines += _warmup(signature.inputs, leading, warmup_shapes or {})
    return "\n".join(lines) + "\n"


def triton_server_args(
    serving: ServingSpec | None,
    model_repository: str,
    *,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    model_control_mode: ModelControlMode = "none",
    load_models: Sequence[str] = (),
    backend_directory: str | None = None,
    cache_directory: str | None = None,
    gpu_metrics: bool = False,
    log_verbose: int = 0,
    exit_timeout_seconds: int = 30,
) -> list[str]:
    """``tritonserver``'s arguments (without the program name).

    Readiness is strict (the server is ready only when every model is) and a model that fails
    to load stops the server (``--exit-on-error``), so a bad rollout fails its readiness probe
    instead of serving half the models. Metrics are always on: the autoscaler reads them.
    """
    for port_name, port in (("http", http_port), ("grpc", grpc_port), ("metrics", metrics_port)):
        if not 0 < port < 65536:
            raise TritonConfigError(f"{port_name} port {port} is outside 1..65535")
    if len({http_port, grpc_port, metrics_port}) != 3:
        raise TritonConfigError("http, grpc and metrics ports must differ")
    if load_models and model_control_mode != "explicit":
        raise TritonConfigError("load_models needs model_control_mode 'explicit'")

    args = [
        f"--model-repository={model_repository}",
        f"--model-control-mode={model_control_mode}",
        *(f"--load-model={model}" for model in load_models),
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={exit_timeout_seconds}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=true",
        f"--allow-gpu-metrics={_flag(gpu_metrics)}",
        f"--metrics-port={metrics_port}",
        f"--log-verbose={log_verbose}",
    ]
    if backend_directory is not None:
        args.append(f"--backend-directory={backend_directory}")
    if cache_directory is not None:
        args.append(f"--cache-directory={cache_directory}")
    if serving is not None and serving.response_cache.enabled:
        # Without a server-wide cache, `response_cache { enable: true }` in a model is inert.
        args.append(f"--cache-config=local,size={serving.response_cache.size_bytes}")
    return args


def _check_name(name: str) -> None:
    # A model name is a directory in the repository and a path segment in /v2/models/<name>.
    if not name or name in {".", ".."} or any(c in name for c in '/\\"\n\r\t '):
        raise TritonConfigError(f"model name {name!r} must be a plain directory name")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensors(kind: str, tensors: Sequence[TensorSpec], leading: tuple[int, ...]) -> list[str]:
    lines = [f"{kind} ["]
    for index, tensor in enumerate(tensors):
        for dim in tensor.shape:
            if dim == 0 or dim < -1:
                raise TritonConfigError(f"{kind} {tensor.name!r}: dim {dim} (use -1 for dynamic)")
        _check_name(tensor.name)
        lines += [
            "  {",
            f"    name: {_quote(tensor.name)}",
            f"    data_type: {triton_dtype(tensor.dtype)}",
            # Triton needs at least one dim; a scalar per batch item is dims [ 1 ].
            f"    dims: {_dims(leading + tensor.shape or (1,))}",
            "  }" + ("," if index < len(tensors) - 1 else ""),
        ]
    return [*lines, "]"]


def _instance_group(serving: ServingSpec) -> list[str]:
    group = serving.instance_group
    return [
        "instance_group [",
        "  {",
        f"    count: {group.count}",
        f"    kind: {group.kind}",
        "  }",
        "]",
    ]


def _dynamic_batching(serving: ServingSpec, max_batch_size: int) -> list[str]:
    batching = serving.dynamic_batching
    preferred = sorted({b for b in batching.preferred_batch_sizes if b <= max_batch_size})
    lines = ["dynamic_batching {"]
    if preferred:
        lines.append(f"  preferred_batch_size: {_dims(preferred)}")
    lines.append(f"  max_queue_delay_microseconds: {batching.max_queue_delay_microseconds}")
    if batching.priority_levels > 0:
        # Unmarked requests get the lowest priority, so a caller can only raise its own.
        lines.append(f"  priority_levels: {batching.priority_levels}")
        lines.append(f"  default_priority_level: {batching.priority_levels}")
    if batching.default_queue_policy is not None:
        lines += _queue_policy(batching.default_queue_policy)
    return [*lines, "}"]


def _queue_policy(policy: QueuePolicy) -> list[str]:
    return [
        "  default_queue_policy {",
        f"    timeout_action: {policy.timeout_action}",
        f"    default_timeout_microseconds: {policy.default_timeout_microseconds}",
        f"    allow_timeout_override: {_flag(policy.allow_timeout_override)}",
        f"    max_queue_size: {policy.max_queue_size}",
        "  }",
    ]


def _warmup(
    inputs: Sequence[TensorSpec],
    leading: tuple[int, ...],
    overrides: Mapping[str, Sequence[int]],
) -> list[str]:
    unknown = set(overrides) - {tensor.name for tensor in inputs}
    if unknown:
        raise TritonConfigError(f"warmup shapes for unknown inputs: {', '.join(sorted(unknown))}")
    # One zero-filled request of batch 1 loads weights and allocates buffers before readiness,
    # so the first real request does not pay for it.
    lines = [
        "model_warmup [",
        "  {",
        f"    name: {_quote('zero_batch_1')}",
        "    batch_size: 1",
    ]
    for tensor in inputs:
        dims = overrides.get(tensor.name)
        if dims is None:
            full = leading + tensor.shape or (1,)
            dims = [WARMUP_DYNAMIC_DIM if d == -1 else d for d in full]
        lines += [
            "    inputs {",
            f"      key: {_quote(tensor.name)}",
            "      value {",
            f"        data_type: {triton_dtype(tensor.dtype)}",
            f"        dims: {_dims(dims)}",
            "        zero_data: true",
            "      }",
            "    }",
        ]
    return [*lines, "  }", "]"]

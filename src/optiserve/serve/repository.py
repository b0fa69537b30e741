"""Model repositories: write a production one from an ONNX file, and make a local CPU copy.

A production repository (what the optimizer writes and the cluster's Triton serves) holds
``<name>/config.pbtxt`` with ``platform: "onnxruntime_onnx"`` and ``<name>/<version>/model.onnx``.
The local Triton has no onnxruntime backend, so :func:`localize_repository` writes a twin
whose configs say ``backend: "python"`` (inputs, outputs, batching, cache and warmup kept) and
whose version folders hold our ``model.py`` next to a link to the same ``model.onnx``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Final

from optiserve.api.serving import ServingSpec
from optiserve.model_io import ModelSignature, TensorSpec
from optiserve.render.triton import render_model_config
from optiserve.serve.errors import RepositoryError

CONFIG_FILE = "config.pbtxt"
ONNX_PLATFORM: Final = "onnxruntime_onnx"
ENSEMBLE_PLATFORM: Final = "ensemble"
MODEL_FILE = "model.onnx"
# The python-backend model copied into every local version folder as model.py. A template,
# not a module of this package: it imports onnxruntime, which the core package must not
# (import-linter contract core-stays-light); it only ever runs inside Triton's python stub.
PYTHON_MODEL_SOURCE = Path(__file__).with_name("onnx_model.py.tmpl")
DEFAULT_THREADS = 1  # per model instance: the local machine is small and shared


def onnx_signature(path: Path) -> ModelSignature:
    """Inputs and outputs of an ONNX file; batched when every tensor's first axis is dynamic."""
    import onnx
    from onnx import helper

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError...
        raise RepositoryError(f"{path}: not an ONNX model: {exc}") from exc
    initializers = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]

    def dims(value: Any) -> list[int]:
        # dim_value 0 means "not set": a named (dim_param) or unknown dimension.
        return [d.dim_value if d.dim_value > 0 else -1 for d in value.type.tensor_type.shape.dim]

    tensors = [*inputs, *graph.output]
    batched = all(dims(v) and dims(v)[0] == -1 for v in tensors)

    def spec(value: Any) -> TensorSpec:
        elem_type = value.type.tensor_type.elem_type
        if elem_type == onnx.TensorProto.STRING:
            dtype = "bytes"
        else:
            try:
                dtype = str(helper.tensor_dtype_to_np_dtype(elem_type))
            except (KeyError, ValueError):
                raise RepositoryError(
                    f"{path.name}: {value.name} has unsupported element type {elem_type}"
                ) from None
        shape = dims(value)
        return TensorSpec(value.name, dtype, tuple(shape[1:] if batched else shape))

    return ModelSignature(
        inputs=tuple(spec(v) for v in inputs),
        outputs=tuple(spec(v) for v in graph.output),
        batched=batched,
    )


def write_onnx_model(
    repository: Path,
    name: str,
    onnx_file: Path,
    serving: ServingSpec,
    signature: ModelSignature | None = None,
) -> Path:
    """``repository/name/{config.pbtxt,1/model.onnx}`` for Triton's onnxruntime backend."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, model_dir / "1" / MODEL_FILE)
    signature = signature or onnx_signature(onnx_file)
    config = render_model_config(name, signature, serving, ONNX_PLATFORM)
    (model_dir / CONFIG_FILE).write_text(config)
    return model_dir


def model_directories(repository: Path) -> list[Path]:
    """The model folders (those with a ``config.pbtxt``), or a typed error."""
    if not repository.is_dir():
        raise RepositoryError(f"model repository {repository} is not a directory")
    models = sorted(p for p in repository.iterdir() if (p / CONFIG_FILE).is_file())
    if not models:
        raise RepositoryError(f"{repository} holds no <model>/{CONFIG_FILE}")
    return models


def read_config(path: Path) -> Any:
    """``config.pbtxt`` as Triton's ``ModelConfig``; a typed error when it does not parse."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise RepositoryError(f"{path}: not a Triton model config: {exc}") from exc


def response_cache_used(repository: Path) -> bool:
    """Whether any model asks for the response cache (the server then needs one)."""
    return any(
        read_config(m / CONFIG_FILE).response_cache.enable for m in model_directories(repository)
    )


def localize_repository(
    source: Path, target: Path, threads_per_instance: int = DEFAULT_THREADS
) -> list[str]:
    """Writes the CPU twin of ``source`` into ``target``; returns the model names."""
    from google.protobuf import text_format

    names = []
    for model_dir in model_directories(source):
        config = read_config(model_dir / CONFIG_FILE)
        if config.backend == "python" or config.platform == ENSEMBLE_PLATFORM:
            # Runs here as it is: a python model, or an ensemble of the repository's models.
            (target / model_dir.name).symlink_to(model_dir.resolve(), target_is_directory=True)
        elif config.platform == ONNX_PLATFORM or config.backend == "onnxruntime":
            _localize_onnx(model_dir, target / model_dir.name, config, threads_per_instance)
            (target / model_dir.name / CONFIG_FILE).write_text(text_format.MessageToString(config))
        else:
            kind = config.platform or config.backend or "unknown"
            raise RepositoryError(
                f"model {model_dir.name}: {kind} needs the GPU Triton image; the local runner "
                "serves ONNX (through onnxruntime), python-backend and ensemble models"
            )
        names.append(config.name or model_dir.name)
    return names


def _localize_onnx(source: Path, target: Path, config: Any, threads: int) -> None:
    filename = config.default_model_filename or MODEL_FILE
    versions = sorted(
        p for p in source.iterdir() if p.is_dir() and p.name.isdigit() and (p / filename).is_file()
    )
    if not versions:
        raise RepositoryError(f"model {source.name}: no <version>/{filename} in {source}")
    for version in versions:
        local = target / version.name
        local.mkdir(parents=True)
        for item in version.iterdir():  # the model and any external-data files beside it
            link_name = MODEL_FILE if item.name == filename else item.name
            (local / link_name).symlink_to(item.resolve())
        shutil.copyfile(PYTHON_MODEL_SOURCE, local / "model.py")
    localize_config(config, threads)


def localize_config(config: Any, threads: int = DEFAULT_THREADS) -> None:
    """Turns an onnxruntime ``ModelConfig`` into its python-backend twin, in place."""
    config.platform = ""
    config.backend = "python"
    config.default_model_filename = ""
    config.ClearField("optimization")  # CUDA graphs and GPU accelerators mean nothing here
    for group in config.instance_group:
        group.kind = group.KIND_CPU
        del group.gpus[:]
    if "intra_op_thread_count" not in config.parameters:
        config.parameters["intra_op_thread_count"].string_value = str(threads)

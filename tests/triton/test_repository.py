"""Production repository -> local CPU twin, without starting a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from optiserve.api.serving import (
    DynamicBatchingSpec,
    InstanceGroupSpec,
    ResponseCacheSpec,
    ServingSpec,
)
from optiserve.model_io import ModelSignature, TensorSpec
from optiserve.serve import RepositoryError
from optiserve.serve.command import find_repository
from optiserve.serve.repository import (
    localize_repository,
    onnx_signature,
    read_config,
    response_cache_used,
    write_onnx_model,
)
from tests.triton.tiny_models import matmul_relu, row_sum

CPU = model_config_pb2.ModelInstanceGroup.KIND_CPU
GPU_SERVING = ServingSpec(
    dynamic_batching=DynamicBatchingSpec(max_queue_delay_microseconds=700),
    response_cache=ResponseCacheSpec(enabled=True),
    instance_group=InstanceGroupSpec(count=2, kind="KIND_GPU"),
)


def test_signature_comes_from_the_onnx_file(tmp_path: Path) -> None:
    assert onnx_signature(matmul_relu(tmp_path / "m.onnx")) == ModelSignature(
        inputs=(TensorSpec("x", "float32", (4,)),), outputs=(TensorSpec("y", "float32", (3,)),)
    )
    assert onnx_signature(row_sum(tmp_path / "r.onnx")).inputs == (
        TensorSpec("tokens", "int64", (-1,)),
    )


def test_local_twin_runs_the_same_onnx_through_the_python_backend(tmp_path: Path) -> None:
    production = tmp_path / "production"
    write_onnx_model(production, "mm", matmul_relu(tmp_path / "m.onnx"), GPU_SERVING)
    local = tmp_path / "local"
    local.mkdir()

    assert localize_repository(production, local, threads_per_instance=2) == ["mm"]

    original, twin = (read_config(r / "mm" / "config.pbtxt") for r in (production, local))
    assert original.platform == "onnxruntime_onnx"
    assert (twin.platform, twin.backend) == ("", "python")
    assert [(g.count, g.kind) for g in twin.instance_group] == [(2, CPU)]
    assert twin.parameters["intra_op_thread_count"].string_value == "2"
    # Everything that shapes serving behaviour is kept.
    for field in (
        "input",
        "output",
        "max_batch_size",
        "dynamic_batching",
        "response_cache",
        "model_warmup",
        "version_policy",
    ):
        assert getattr(twin, field) == getattr(original, field), field
    version = local / "mm" / "1"
    assert (version / "model.onnx").resolve() == (production / "mm" / "1" / "model.onnx").resolve()
    model_py = (version / "model.py").read_text()
    assert "class TritonPythonModel" in model_py
    compile(model_py, "model.py", "exec")  # a template file, so check it is valid Python
    assert response_cache_used(production)


def test_python_backend_models_pass_through_unchanged(tmp_path: Path) -> None:
    production = tmp_path / "production"
    (production / "echo" / "1").mkdir(parents=True)
    (production / "echo" / "config.pbtxt").write_text('name: "echo"\nbackend: "python"\n')
    local = tmp_path / "local"
    local.mkdir()

    assert localize_repository(production, local) == ["echo"]
    assert (local / "echo").resolve() == (production / "echo").resolve()
    assert not response_cache_used(production)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('name: "m"\nplatform: "tensorrt_plan"\n', "tensorrt_plan needs the GPU Triton image"),
        ('name: "m"\nplatform: "pytorch_libtorch"\n', "pytorch_libtorch needs the GPU"),
        ("name: 'm'\nno_such_field: 1\n", "not a Triton model config"),
        ('name: "m"\nplatform: "onnxruntime_onnx"\n', r"no <version>/model\.onnx"),
    ],
)
def test_unservable_repositories_are_typed_errors(
    tmp_path: Path, config: str, message: str
) -> None:
    (tmp_path / "production" / "m").mkdir(parents=True)
    (tmp_path / "production" / "m" / "config.pbtxt").write_text(config)
    (tmp_path / "local").mkdir()

    with pytest.raises(RepositoryError, match=message):
        localize_repository(tmp_path / "production", tmp_path / "local")


def test_empty_or_missing_repository_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="holds no"):
        localize_repository(tmp_path, tmp_path)
    with pytest.raises(RepositoryError, match="not a directory"):
        localize_repository(tmp_path / "missing", tmp_path)


def test_find_repository_looks_in_known_subfolders(tmp_path: Path) -> None:
    write_onnx_model(
        tmp_path / "model_repository", "mm", matmul_relu(tmp_path / "m.onnx"), ServingSpec()
    )
    assert find_repository(tmp_path) == tmp_path / "model_repository"
    assert find_repository(tmp_path / "model_repository") == tmp_path / "model_repository"
    with pytest.raises(RepositoryError, match="no Triton model repository"):
        find_repository(tmp_path / "model_repository" / "mm" / "1")

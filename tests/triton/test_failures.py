"""Failures are reported with Triton's own words, fast, never hung on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from optiserve.api.serving import ServingSpec
from optiserve.serve import LocalTriton, ModelLoadError, RepositoryError
from optiserve.serve.command import serve
from tests.triton.conftest import MODEL, RepoFactory

pytestmark = [pytest.mark.triton, pytest.mark.models, pytest.mark.timeout(300)]


def test_model_that_fails_to_load_is_reported_with_tritons_error(
    make_repository: RepoFactory,
) -> None:
    repository = make_repository(ServingSpec())
    (repository / MODEL / "1" / "model.onnx").write_bytes(b"this is not an onnx file")

    with pytest.raises(ModelLoadError) as raised:
        LocalTriton(repository, startup_timeout_s=120).start()

    assert set(raised.value.models) == {MODEL}
    assert "onnx" in raised.value.models[MODEL].lower() or "protobuf" in str(raised.value)
    assert raised.value.log_tail  # the end of Triton's log travels with the error


def test_config_naming_an_output_the_model_lacks_is_reported(make_repository: RepoFactory) -> None:
    repository = make_repository(ServingSpec())
    config = repository / MODEL / "config.pbtxt"
    # Parses as a ModelConfig, but names an output the model does not have.
    config.write_text(config.read_text().replace('name: "logits"', 'name: "no_such_output"'))

    with pytest.raises(ModelLoadError) as raised:
        LocalTriton(repository, startup_timeout_s=120).start()

    assert "no_such_output not in model.onnx (its outputs: logits)" in str(raised.value)


def test_config_that_fails_tritons_validation_is_reported(make_repository: RepoFactory) -> None:
    repository = make_repository(ServingSpec())
    config = repository / MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 32", "max_batch_size: -2"))

    with pytest.raises(ModelLoadError) as raised:
        LocalTriton(repository, startup_timeout_s=120).start()

    assert MODEL in raised.value.models


def test_gpu_only_platform_is_refused_before_starting(make_repository: RepoFactory) -> None:
    repository = make_repository(ServingSpec())
    config = repository / MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace("onnxruntime_onnx", "tensorrt_plan"))

    with pytest.raises(RepositoryError, match="tensorrt_plan needs the GPU Triton image"):
        LocalTriton(repository).start()


def test_serve_command_exits_with_an_error_for_an_empty_directory(tmp_path: Path) -> None:
    assert serve(tmp_path, ports=(18900, 18901, 18902)) == 2


def test_missing_version_folder_is_a_repository_error(make_repository: RepoFactory) -> None:
    repository = make_repository(ServingSpec())
    shutil.rmtree(repository / MODEL / "1")

    with pytest.raises(RepositoryError, match=r"no <version>/model\.onnx"):
        LocalTriton(repository).start()

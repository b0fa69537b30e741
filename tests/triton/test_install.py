"""Finding tritonserver, and the runner's promise never to hang."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from optiserve.api.serving import ServingSpec
from optiserve.serve import LocalTriton, TritonNotFoundError, TritonTimeoutError
from optiserve.serve.install import TRITON_HOME_ENV, find_triton, missing_libraries
from optiserve.serve.repository import write_onnx_model
from tests.triton.tiny_models import matmul_relu


def test_the_wheel_install_is_complete_for_this_python() -> None:
    install = find_triton()

    assert install.stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert missing_libraries(install.binary, install.environment()) == []
    assert missing_libraries(install.stub, install.environment()) == []


def test_incomplete_triton_home_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRITON_HOME_ENV, str(tmp_path))

    with pytest.raises(TritonNotFoundError, match="incomplete Triton install") as raised:
        find_triton()
    assert str(tmp_path / "bin" / "tritonserver") in str(raised.value)


@pytest.mark.triton
@pytest.mark.timeout(120)
def test_startup_timeout_stops_the_server_and_reports_the_log(tmp_path: Path) -> None:
    write_onnx_model(tmp_path / "repo", "mm", matmul_relu(tmp_path / "m.onnx"), ServingSpec())
    triton = LocalTriton(tmp_path / "repo", startup_timeout_s=1.0)

    with pytest.raises(TritonTimeoutError, match="not ready after") as raised:
        triton.start()

    assert not triton.running
    assert "tritonserver log" in str(raised.value)

"""``optiserve optimize`` (the Job's command, and a laptop's) with its model and data on a real
HTTPS server and a real S3 server: the same URIs, credentials from the environment."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiserve_optimizer.main import run_optimize
from optiserve_testing.binaries import BinariesUnavailable
from optiserve_testing.s3server import S3Server, start_s3
from tests.optimizer.conftest import make_mlp, make_npz
from tests.remote.http_servers import Behaviour, RunningServer, serve


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh fetch cache and termination file per test; no AWS variables of the machine."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPTISERVE_FETCH_ROOT", str(tmp_path / "fetch"))
    monkeypatch.setenv("OPTISERVE_TERMINATION_LOG", str(tmp_path / "termination"))
    return tmp_path / "termination"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("model")
    model = make_mlp(folder / "mlp.onnx", sizes=(16, 32, 10))
    data = make_npz(folder / "eval.npz", 16)
    return {"/models/mlp.onnx": model.read_bytes(), "/data/eval.npz": data.read_bytes()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_spec(tmp_path: Path, source: dict[str, Any], dataset: str) -> Path:
    doc = {
        "name": "mlp",
        "source": {"format": "onnx", **source},
        "optimization": {
            "accuracy": {"dataset": dataset, "metric": "maxAbsError", "maxDrop": 0.5},
            "benchmark": {"batchSizes": [1], "iterations": 3, "warmup": 1, "rounds": 3},
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def https(
    files: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningServer]:
    with serve(Behaviour(files=files), tmp_path / "tls") as server:
        assert server.ca_file is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
        yield server


def test_optimize_reads_a_pinned_https_model_and_dataset(
    https: RunningServer, files: dict[str, bytes], env: Path, tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path,
        {"uri": f"{https.url}/models/mlp.onnx", "sha256": sha(files["/models/mlp.onnx"])},
        f"{https.url}/data/eval.npz#sha256={sha(files['/data/eval.npz'])}",
    )
    assert run_optimize(spec, tmp_path / "out") == 0
    summary = json.loads(env.read_text())
    assert summary["ok"] is True
    report = json.loads((tmp_path / "out" / summary["digest"] / "report.json").read_text())
    assert report["source"]["sha256"] == sha(files["/models/mlp.onnx"])


def test_a_wrong_pin_fails_before_any_work_naming_the_uri(
    https: RunningServer, files: dict[str, bytes], env: Path, tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path,
        {"uri": f"{https.url}/models/mlp.onnx", "sha256": sha(files["/models/mlp.onnx"])},
        f"{https.url}/data/eval.npz?token=hunter2#sha256={'0' * 64}",
    )
    assert run_optimize(spec, tmp_path / "out") == 2
    error = json.loads(env.read_text())["error"]
    assert error["type"] == "FetchFailedError" and error["pass"] == "fetch"
    assert error["message"].startswith(f"PinMismatch: {https.url}/data/eval.npz: sha256")
    assert "hunter2" not in env.read_text()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]) -> Iterator[S3Server]:
    try:
        with start_s3(tmp_path_factory.mktemp("s3"), buckets=["models"]) as server:
            for path, data in files.items():
                server.put("models", path.lstrip("/"), data)
            yield server
    except BinariesUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.s3
def test_optimize_reads_s3_with_credentials_from_the_environment(
    s3: S3Server, env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3.env(s3.reader).items():
        monkeypatch.setenv(key, value)
    spec = write_spec(tmp_path, {"uri": "s3://models/models/mlp.onnx"}, "s3://models/data/eval.npz")
    assert run_optimize(spec, tmp_path / "out") == 0
    assert json.loads(env.read_text())["ok"] is True


@pytest.mark.s3
def test_wrong_s3_credentials_fail_naming_the_uri_not_the_secret(
    s3: S3Server,
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in s3.env(s3.wrong).items():
        monkeypatch.setenv(key, value)
    spec = write_spec(tmp_path, {"uri": "s3://models/models/mlp.onnx"}, "s3://models/data/eval.npz")
    assert run_optimize(spec, tmp_path / "out") == 2
    error = json.loads(env.read_text())["error"]
    assert error["message"].startswith("AccessDenied: s3://models/models/mlp.onnx: access denied")
    printed = capsys.readouterr()
    for text in (env.read_text(), printed.out, printed.err):
        assert s3.wrong.secret_key not in text

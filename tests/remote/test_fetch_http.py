"""Fetching https:// URIs from a real local HTTPS server: pin, drops, retries, never a half file."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from optiserve.remote.errors import (
    NotFoundError,
    PinMismatchError,
    TransferError,
    UnpinnedError,
)
from optiserve.remote.fetch import FetchSettings, fetch
from optiserve.uri import local_path, staged_path
from tests.remote.http_servers import Behaviour, RunningServer, recorder, serve

BODY = os.urandom(3 * (1 << 20) + 12345)
PIN = hashlib.sha256(BODY).hexdigest()


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(Behaviour(), tmp_path_factory.mktemp("tls")) as server:
        yield server


@pytest.fixture
def https(https_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    """The module's server, behaviour reset, its CA trusted through SSL_CERT_FILE."""
    fresh = Behaviour(body=BODY)
    for name in ("body", "drop_first", "status", "json_body", "requests"):
        setattr(https_server.behaviour, name, getattr(fresh, name))
    assert https_server.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(https_server.ca_file))
    return https_server


def settings(waits: list[float]) -> FetchSettings:
    return FetchSettings(attempts=4, backoff_s=0.5, timeout_s=10, sleep=waits.append)


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if ".part" in p.name or ".old" in p.name]


def test_pinned_https_file_is_streamed_whole(https: RunningServer, tmp_path: Path) -> None:
    root = tmp_path / "fetch"
    uri = f"{https.url}/models/model.onnx#sha256={PIN}"
    lines, log = recorder()
    path = fetch(uri, settings=settings([]), log=log, root=root, env={})
    assert path == staged_path(uri, root) and path.name == "model.onnx"
    assert path.read_bytes() == BODY
    assert any("MiB done" in line for line in lines)
    assert leftovers(root) == []
    # A second fetch with the pin finds the staged copy and asks the server nothing.
    before = len(https.behaviour.requests)
    assert fetch(uri, settings=settings([]), log=log, root=root, env={}) == path
    assert len(https.behaviour.requests) == before


def test_pin_in_source_sha256_counts_too(https: RunningServer, tmp_path: Path) -> None:
    path = fetch(f"{https.url}/m.onnx", pin=PIN, settings=settings([]), log=print, root=tmp_path)
    assert path.read_bytes() == BODY


def test_unpinned_https_is_refused_before_any_request(https: RunningServer, tmp_path: Path) -> None:
    with pytest.raises(UnpinnedError, match=r"127\.0\.0\.1.*/m\.onnx: an http\(s\) URI needs"):
        fetch(f"{https.url}/m.onnx", settings=settings([]), log=print, root=tmp_path)
    assert https.behaviour.requests == []


def test_wrong_pin_keeps_nothing(https: RunningServer, tmp_path: Path) -> None:
    uri = f"{https.url}/m.onnx#sha256={'0' * 64}"
    with pytest.raises(PinMismatchError) as caught:
        fetch(uri, settings=settings([]), log=print, root=tmp_path)
    assert str(caught.value).startswith(f"{https.url}/m.onnx: sha256 is not the pinned")
    assert not staged_path(uri, tmp_path).exists()
    assert leftovers(tmp_path) == []
    assert len(https.behaviour.requests) == 1  # a wrong pin is not retried


def test_a_drop_mid_download_resumes_with_a_range_request(
    https: RunningServer, tmp_path: Path
) -> None:
    https.behaviour.drop_first = 1
    waits: list[float] = []
    lines, log = recorder()
    path = fetch(
        f"{https.url}/m.onnx#sha256={PIN}", settings=settings(waits), log=log, root=tmp_path
    )
    assert path.read_bytes() == BODY
    requests = https.behaviour.requests
    assert len(requests) == 2 and "Range" not in requests[0]
    assert requests[1]["Range"] == f"bytes={len(BODY) // 2}-"
    assert waits == [0.5]
    assert any("retry 1/3" in line and "connection closed after" in line for line in lines)


def test_a_server_that_always_drops_fails_after_bounded_tries(
    https: RunningServer, tmp_path: Path
) -> None:
    https.behaviour.drop_first = 100
    waits: list[float] = []
    uri = f"{https.url}/m.onnx#sha256={PIN}"
    with pytest.raises(TransferError) as caught:
        fetch(uri, settings=settings(waits), log=print, root=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{https.url}/m.onnx: ") and "(after 4 tries)" in message
    assert len(https.behaviour.requests) == 4  # no retry storm
    assert waits == [0.5, 1.0, 2.0]  # exponential backoff
    assert not staged_path(uri, tmp_path).exists() and leftovers(tmp_path) == []


def test_server_errors_are_retried_then_reported(https: RunningServer, tmp_path: Path) -> None:
    https.behaviour.status = 503
    waits: list[float] = []
    with pytest.raises(TransferError, match=r"HTTP 503 \(after 4 tries\)"):
        fetch(
            f"{https.url}/m.onnx#sha256={PIN}", settings=settings(waits), log=print, root=tmp_path
        )
    assert len(https.behaviour.requests) == 4


def test_not_found_is_not_retried_and_the_query_string_is_never_printed(
    https: RunningServer, tmp_path: Path
) -> None:
    https.behaviour.status = 404
    secret = "X-Amz-Signature=deadbeefsecret"
    uri = f"{https.url}/m.onnx?{secret}#sha256={PIN}"
    with pytest.raises(NotFoundError) as caught:
        fetch(uri, settings=settings([]), log=print, root=tmp_path)
    assert "deadbeefsecret" not in str(caught.value) and "m.onnx" in str(caught.value)
    assert len(https.behaviour.requests) == 1
    assert https.behaviour.requests[0]["path"] == f"/m.onnx?{secret}"


def test_local_path_of_a_remote_uri_is_its_staged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTISERVE_FETCH_ROOT", str(tmp_path))
    uri = f"https://example.com/data/eval.npz#sha256={PIN}"
    assert local_path(uri) == staged_path(uri, tmp_path)
    assert local_path(uri).suffix == ".npz"
    assert staged_path("s3://b/x/eval.npz", tmp_path) != staged_path("s3://c/x/eval.npz", tmp_path)

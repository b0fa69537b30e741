"""spec.objectStore.caBundle at the edge: the TLS context of optiserve.remote, against a real
local HTTPS server whose certificate a private CA signed (tests/remote/http_servers.py)."""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optiserve.remote import artifact_cli
from optiserve.remote.errors import NotFoundError
from optiserve.remote.fetch import FetchSettings, fetch
from optiserve.remote.s3 import S3Client, S3Config
from optiserve.remote.tls import (
    CA_BUNDLE_ENV,
    CaBundleError,
    UntrustedCertificateError,
    ssl_context,
)
from optiserve_testing.pki import make_ca
from tests.remote.http_servers import Behaviour, RunningServer, recorder, serve

BODY = os.urandom(64 * 1024)
PIN = hashlib.sha256(BODY).hexdigest()


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(Behaviour(body=BODY), tmp_path_factory.mktemp("tls")) as server:
        yield server


@pytest.fixture
def other_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The "system" roots: a CA that did not sign the server (through SSL_CERT_FILE, which
    OpenSSL's default paths honour), so the machine's real roots play no part."""
    ca = make_ca(tmp_path / "system", common_name="unrelated-root")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return ca.cert


def subjects(context: ssl.SSLContext) -> set[str]:
    names = set()
    for cert in context.get_ca_certs():
        subject: Any = cert["subject"]  # ((("commonName", "x"),), ...)
        for rdn in subject:
            names |= {value for key, value in rdn if key == "commonName"}
    return names


def settings(ca_bundle: str | None, waits: list[float]) -> FetchSettings:
    return FetchSettings(
        s3=S3Config(ca_bundle=ca_bundle),
        attempts=4,
        backoff_s=0.5,
        timeout_s=10,
        sleep=waits.append,
    )


def test_the_context_trusts_the_system_roots_and_the_bundle(
    https: RunningServer, other_ca: Path
) -> None:
    assert https.ca_file is not None
    assert subjects(ssl_context(None)) == {"unrelated-root"}
    both = ssl_context(str(https.ca_file))
    assert subjects(both) == {"unrelated-root", "optiserve-test-ca"}
    assert both.verify_mode == ssl.CERT_REQUIRED and both.check_hostname


def test_a_missing_bundle_is_a_typed_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "ca.crt"
    with pytest.raises(CaBundleError) as caught:
        ssl_context(str(path))
    assert str(caught.value).startswith(f"{path}: the CA bundle cannot be read")
    assert caught.value.reason == "CaBundleInvalid"


@pytest.mark.parametrize(
    "content", ["", "not a certificate\n", "-----BEGIN CERTIFICATE-----\nAAAA\n"]
)
def test_a_bundle_without_a_certificate_is_a_typed_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ca.crt"
    path.write_text(content)
    with pytest.raises(CaBundleError, match=rf"^{path}: the CA bundle holds no valid PEM"):
        ssl_context(str(path))


def test_without_the_bundle_the_fetch_fails_on_the_certificate_once(
    https: RunningServer, other_ca: Path, tmp_path: Path
) -> None:
    waits: list[float] = []
    lines, log = recorder()
    uri = f"{https.url}/m.onnx#sha256={PIN}"
    with pytest.raises(UntrustedCertificateError) as caught:
        fetch(uri, settings=settings(None, waits), log=log, root=tmp_path / "out")
    message = str(caught.value)
    assert message.startswith(f"{https.url}/m.onnx: the server's certificate is not trusted")
    assert "set spec.objectStore.caBundle" in message
    assert caught.value.reason == "UntrustedCertificate"
    assert waits == [] and lines == []  # not retried: the next try meets the same certificate
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_with_the_bundle_the_fetch_succeeds(
    https: RunningServer, other_ca: Path, tmp_path: Path
) -> None:
    assert https.ca_file is not None
    uri = f"{https.url}/m.onnx#sha256={PIN}"
    out = tmp_path / "out"
    path = fetch(uri, settings=settings(str(https.ca_file), []), log=print, root=out)
    assert path.read_bytes() == BODY


def test_the_bundle_comes_from_the_environment(
    https: RunningServer, other_ca: Path, tmp_path: Path
) -> None:
    """What the rendered pods set: OPTISERVE_CA_BUNDLE, read by FetchSettings.from_env."""
    assert https.ca_file is not None
    uri = f"{https.url}/m.onnx#sha256={PIN}"
    env = {CA_BUNDLE_ENV: str(https.ca_file)}
    assert fetch(uri, env=env, log=print, root=tmp_path / "out").read_bytes() == BODY


def test_the_bundle_adds_to_the_system_roots(
    https: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's CA among the "system" roots and an unrelated bundle: still trusted, so a
    private store's bundle does not cut off https:// inputs on public hosts."""
    assert https.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(https.ca_file))
    unrelated = make_ca(tmp_path / "private", common_name="private-store-ca").cert
    uri = f"{https.url}/m.onnx#sha256={PIN}"
    path = fetch(uri, settings=settings(str(unrelated), []), log=print, root=tmp_path / "out")
    assert path.read_bytes() == BODY


def test_a_bad_bundle_fails_the_fetch_naming_the_path(https: RunningServer, tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("garbage\n")
    waits: list[float] = []
    with pytest.raises(CaBundleError, match=rf"^{bad}: the CA bundle holds no valid PEM"):
        fetch(
            f"{https.url}/m.onnx#sha256={PIN}",
            settings=settings(str(bad), waits),
            log=print,
            root=tmp_path / "out",
        )
    assert waits == []


def test_the_s3_client_uses_the_bundle(https: RunningServer, other_ca: Path) -> None:
    """The S3 client against the same server (an S3 endpoint over HTTPS): refused without the
    bundle, reaches the server with it (which has no such object)."""
    assert https.ca_file is not None
    plain = S3Client(S3Config(endpoint=https.url, addressing="path"), None, 10)
    with pytest.raises(UntrustedCertificateError, match=r"^https://127\.0\.0\.1:\d+/bucket/key: "):
        plain.get("bucket", "key")
    trusting = S3Client(
        S3Config(endpoint=https.url, addressing="path", ca_bundle=str(https.ca_file)), None, 10
    )
    https.behaviour.status = 404
    try:
        with pytest.raises(NotFoundError):
            trusting.get("bucket", "key")
    finally:
        https.behaviour.status = 200


def test_the_artifact_pull_reports_a_bad_bundle_in_one_line(
    https: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The artifact-pull init container: exit 1, one line naming the path, no traceback."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", https.url)
    monkeypatch.setenv(CA_BUNDLE_ENV, str(tmp_path / "missing.crt"))
    monkeypatch.setenv(artifact_cli.TERMINATION_LOG_ENV, str(tmp_path / "termination"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    code = artifact_cli.main(["pull", "s3://bucket/m/" + "c" * 64, str(tmp_path / "dest")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("cannot pull the artifact (CaBundleInvalid): ")
    assert f"{tmp_path / 'missing.crt'}: the CA bundle cannot be read" in err
    assert "Traceback" not in err

"""Fetching s3:// URIs from a real SeaweedFS S3 gateway (testing/optiserve_testing/s3server.py)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from optiserve.remote.errors import AccessDeniedError, NotFoundError, PinMismatchError
from optiserve.remote.fetch import FetchSettings, fetch, folder_sha256
from optiserve.remote.s3 import Credentials
from optiserve.uri import staged_path
from optiserve_testing.binaries import BinariesUnavailable
from optiserve_testing.s3server import S3Server, start_s3
from tests.remote.http_servers import Behaviour, recorder, serve

pytestmark = pytest.mark.s3

MODEL = os.urandom(2 * (1 << 20) + 7)
FOLDER = {
    "config.json": b'{"model_type": "bert"}',
    "model.safetensors": os.urandom(300_000),
    "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        with start_s3(tmp_path_factory.mktemp("s3"), buckets=["models"]) as server:
            server.put("models", "resnet/model.onnx", MODEL)
            for name, data in FOLDER.items():
                server.put("models", f"minilm/{name}", data)
            yield server
    except BinariesUnavailable as exc:
        pytest.skip(str(exc))


def quick() -> FetchSettings:
    return FetchSettings(attempts=3, backoff_s=0.1, timeout_s=10, sleep=lambda s: None)


def fetch_with(
    server: S3Server, uri: str, root: Path, creds: Credentials | None = None, **kwargs: object
) -> Path:
    env = server.env(creds)
    settings = quick()
    settings.s3 = FetchSettings.from_env(env).s3
    return fetch(uri, settings=settings, env=env, root=root, log=print, **kwargs)  # type: ignore[arg-type]


def test_an_object_is_fetched_with_read_only_credentials(s3: S3Server, tmp_path: Path) -> None:
    uri = "s3://models/resnet/model.onnx"
    pin = hashlib.sha256(MODEL).hexdigest()
    path = fetch_with(s3, uri, tmp_path, pin=pin)
    assert path == staged_path(uri, tmp_path) and path.read_bytes() == MODEL


def test_a_prefix_is_fetched_as_a_folder_with_a_folder_pin(s3: S3Server, tmp_path: Path) -> None:
    expected = tmp_path / "expected"
    for name, data in FOLDER.items():
        (expected / name).parent.mkdir(parents=True, exist_ok=True)
        (expected / name).write_bytes(data)
    pin = folder_sha256(expected)
    for uri in ("s3://models/minilm/", "s3://models/minilm"):  # with or without the slash
        path = fetch_with(s3, uri, tmp_path / "fetch", pin=pin)
        assert path.is_dir() and path.name == "minilm"
        assert {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} == set(
            FOLDER
        )
        assert (path / "tokenizer" / "vocab.txt").read_bytes() == FOLDER["tokenizer/vocab.txt"]
    assert not [p for p in (tmp_path / "fetch").rglob("*") if ".part" in p.name]


def test_a_wrong_folder_pin_keeps_nothing(s3: S3Server, tmp_path: Path) -> None:
    uri = "s3://models/minilm/"
    with pytest.raises(PinMismatchError, match=r"^s3://models/minilm/: sha256 is not the pinned"):
        fetch_with(s3, uri, tmp_path, pin="1" * 64)
    assert not staged_path(uri, tmp_path).exists()
    assert list(staged_path(uri, tmp_path).parent.iterdir()) == []


def test_wrong_credentials_are_a_clear_error_without_the_secret(
    s3: S3Server, tmp_path: Path
) -> None:
    uri = "s3://models/resnet/model.onnx"
    with pytest.raises(AccessDeniedError) as caught:
        fetch_with(s3, uri, tmp_path, s3.wrong)
    message = str(caught.value)
    assert message.startswith(f"{uri}: access denied (HTTP 403")
    assert s3.wrong.secret_key not in message
    assert not staged_path(uri, tmp_path).exists()


def test_a_missing_key_is_not_found(s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"^s3://models/nope\.onnx: no object"):
        fetch_with(s3, "s3://models/nope.onnx", tmp_path)
    with pytest.raises(NotFoundError, match=r"^s3://missing-bucket/x\.onnx: "):
        fetch_with(s3, "s3://missing-bucket/x.onnx", tmp_path)


def test_the_read_only_key_cannot_write(s3: S3Server) -> None:
    with pytest.raises(AccessDeniedError):
        s3.client(s3.reader).put_bytes("models", "resnet/overwritten.onnx", b"x")


def test_pod_identity_credentials_come_from_the_agent(s3: S3Server, tmp_path: Path) -> None:
    """EKS Pod Identity / ECS: credentials from AWS_CONTAINER_CREDENTIALS_FULL_URI."""
    token = tmp_path / "token"
    token.write_text("agent-token\n")
    agent = Behaviour(
        json_body={"AccessKeyId": s3.reader.access_key, "SecretAccessKey": s3.reader.secret_key}
    )
    with serve(agent) as server:
        env = {
            **{k: v for k, v in s3.env().items() if not k.startswith("AWS_ACCESS")},
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{server.url}/v1/credentials",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token),
        }
        env.pop("AWS_SECRET_ACCESS_KEY")
        settings = quick()
        settings.s3 = FetchSettings.from_env(env).s3
        lines, log = recorder()
        path = fetch(
            "s3://models/resnet/model.onnx", settings=settings, env=env, root=tmp_path, log=log
        )
    assert path.read_bytes() == MODEL
    assert agent.requests[0]["Authorization"] == "agent-token"
    assert not any(s3.reader.secret_key in line for line in lines)


def test_irsa_credentials_come_from_sts_with_the_web_identity_token(
    s3: S3Server, tmp_path: Path
) -> None:
    """IRSA: AssumeRoleWithWebIdentity at AWS_ENDPOINT_URL_STS with the projected token. (The
    local STS answers without a SessionToken: SeaweedFS would not know one.)"""
    token = tmp_path / "token"
    token.write_text("projected-jwt\n")
    xml = (
        '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        "<AssumeRoleWithWebIdentityResult><Credentials>"
        f"<AccessKeyId>{s3.reader.access_key}</AccessKeyId>"
        f"<SecretAccessKey>{s3.reader.secret_key}</SecretAccessKey>"
        "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
    ).encode()
    sts = Behaviour(files={"/": xml})
    with serve(sts) as server:
        env = {
            **{k: v for k, v in s3.env().items() if not k.startswith("AWS_")},
            "AWS_ENDPOINT_URL_S3": s3.endpoint,
            "AWS_REGION": s3.region,
            "AWS_ENDPOINT_URL_STS": server.url,
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/model-reader",
        }
        settings = quick()
        settings.s3 = FetchSettings.from_env(env).s3
        path = fetch("s3://models/resnet/model.onnx", settings=settings, env=env, root=tmp_path)
    assert path.read_bytes() == MODEL
    query = sts.requests[0]["path"]
    assert "Action=AssumeRoleWithWebIdentity" in query and "WebIdentityToken=projected-jwt" in query

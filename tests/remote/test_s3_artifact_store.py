"""``storage.s3`` against a real SeaweedFS: the Job's upload (marker last, idempotent, an
interrupted upload never complete), the Triton pod's pull (checked against the marker), the
cleanup Job's delete, and ``optiserve optimize`` uploading and reusing a real artifact."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from optiserve.remote import artifact_cli
from optiserve.remote.artifacts import MARKER, IncompleteArtifactError, is_complete, pull_folder
from optiserve.remote.fetch import FetchSettings
from optiserve.remote.s3 import S3Client
from optiserve_optimizer.artifact_store import ArtifactStore, StoreTransferError, prune_store
from optiserve_optimizer.main import run_optimize
from optiserve_optimizer.retention import Retention
from optiserve_testing.binaries import BinariesUnavailable
from optiserve_testing.s3server import S3Server, start_s3
from tests.optimizer.conftest import make_mlp, make_npz

pytestmark = pytest.mark.s3
BUCKET = "store"
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "OPTISERVE_ARTIFACT_STORE",
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        with start_s3(tmp_path_factory.mktemp("s3"), buckets=[BUCKET]) as server:
            yield server
    except BinariesUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPTISERVE_FETCH_ROOT", str(tmp_path / "fetch"))
    termination = tmp_path / "termination"
    monkeypatch.setenv("OPTISERVE_TERMINATION_LOG", str(termination))
    monkeypatch.setenv("OPTISERVE_TERMINATION_MESSAGE_PATH", str(termination))
    return termination


class RecordingClient(S3Client):
    """The real client, remembering the keys it wrote; ``fail_after`` PUTs of files it
    raises a connection error instead (a Job killed or cut off mid-upload)."""

    def __init__(self, server: S3Server, fail_after: int | None = None) -> None:
        base = server.client()
        super().__init__(base.config, base.credentials, base.timeout_s)
        self.puts: list[str] = []
        self.deletes: list[str] = []
        self.fail_after = fail_after

    def put_file(self, bucket: str, key: str, path: Path) -> None:
        if self.fail_after is not None and len(self.puts) >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        super().put_file(bucket, key, path)
        self.puts.append(key)

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        super().put_bytes(bucket, key, data)
        self.puts.append(key)

    def delete(self, bucket: str, key: str) -> None:
        super().delete(bucket, key)
        self.deletes.append(key)


def quick() -> FetchSettings:
    return FetchSettings(attempts=2, backoff_s=0.0, timeout_s=10, sleep=lambda s: None)


def store_of(client: S3Client, prefix: str) -> ArtifactStore:
    return ArtifactStore(client, quick(), BUCKET, prefix)


def artifact(root: Path, seed: bytes = b"1") -> Path:
    files = {
        "model_repository/tiny/config.pbtxt": b'name: "tiny"\n',
        "model_repository/tiny/1/model.onnx": seed + os.urandom(300_000),
        "report.json": b'{"ok": true}',
        "report.html": b"<html></html>",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_marker_is_written_last_and_an_upload_is_not_repeated(
    s3: S3Server, tmp_path: Path
) -> None:
    client = RecordingClient(s3)
    store = store_of(client, "prod/ns/m1")
    source = artifact(tmp_path / "a")
    store.upload(source, "d1", print)
    assert client.puts[-1] == f"prod/ns/m1/d1/{MARKER}"
    assert sorted(client.puts[:-1]) == sorted(f"prod/ns/m1/d1/{n}" for n in tree(source))

    client.puts.clear()
    lines: list[str] = []
    store.upload(artifact(tmp_path / "other", seed=b"2"), "d1", lines.append)
    assert client.puts == []  # complete already: nothing written
    assert any("not uploaded again" in line for line in lines)
    pulled = pull_folder(
        s3.client(s3.reader), BUCKET, "prod/ns/m1/d1", tmp_path / "p", quick(), print
    )
    assert tree(pulled) == tree(source)


def test_an_interrupted_upload_is_never_complete_and_a_retry_finishes_it(
    s3: S3Server, tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = artifact(tmp_path / "a")
    broken = RecordingClient(s3, fail_after=2)
    with pytest.raises(StoreTransferError, match=r"TransferFailed: s3://store/prod/ns/m2/d2/"):
        store_of(broken, "prod/ns/m2").upload(source, "d2", print)
    assert len(broken.puts) == 2 and not any(k.endswith(MARKER) for k in broken.puts)
    assert not is_complete(s3.client(), BUCKET, "prod/ns/m2/d2")
    with pytest.raises(IncompleteArtifactError):
        pull_folder(s3.client(s3.reader), BUCKET, "prod/ns/m2/d2", tmp_path / "p", quick(), print)

    # The pod's init container refuses it too, with one line that says why.
    for key, value in s3.env(s3.reader).items():
        monkeypatch.setenv(key, value)
    dest = tmp_path / "pod" / "d2"
    assert artifact_cli.main(["pull", "s3://store/prod/ns/m2/d2", str(dest)]) == 1
    assert clean_env.read_text().startswith("cannot pull the artifact (IncompleteArtifact)")
    assert not dest.exists()

    store_of(RecordingClient(s3), "prod/ns/m2").upload(source, "d2", print)  # the retried Job
    assert artifact_cli.main(["pull", "s3://store/prod/ns/m2/d2", str(dest)]) == 0
    assert tree(dest) == tree(source)


def test_the_pull_refuses_a_file_changed_after_the_marker(
    s3: S3Server, tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_of(s3.client(), "prod/ns/m3").upload(artifact(tmp_path / "a"), "d3", print)
    s3.put(BUCKET, "prod/ns/m3/d3/model_repository/tiny/1/model.onnx", b"tampered")
    for key, value in s3.env(s3.reader).items():
        monkeypatch.setenv(key, value)
    dest = tmp_path / "pod" / "d3"
    assert artifact_cli.main(["pull", "s3://store/prod/ns/m3/d3", str(dest)]) == 1
    assert "model.onnx" in clean_env.read_text()
    assert not dest.exists()
    assert not [p for p in (tmp_path / "pod").iterdir() if ".part" in p.name]


def test_wrong_credentials_fail_the_pull_without_printing_them(
    s3: S3Server,
    tmp_path: Path,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store_of(s3.client(), "prod/ns/m4").upload(artifact(tmp_path / "a"), "d4", print)
    for key, value in s3.env(s3.wrong).items():
        monkeypatch.setenv(key, value)
    assert artifact_cli.main(["pull", "s3://store/prod/ns/m4/d4", str(tmp_path / "d4")]) == 1
    printed = capsys.readouterr()
    assert "AccessDenied" in clean_env.read_text()
    for text in (clean_env.read_text(), printed.out, printed.err):
        assert s3.wrong.secret_key not in text


def test_the_cleanup_deletes_each_digest_marker_first(
    s3: S3Server, tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for digest in ("d5", "d6", "keep"):
        store_of(s3.client(), "prod/ns/m5").upload(artifact(tmp_path / digest), digest, print)
    client = RecordingClient(s3)
    real_client = artifact_cli._client
    monkeypatch.setattr(artifact_cli, "_client", lambda settings: client)
    assert artifact_cli.main(["delete", "s3://store/prod/ns/m5", "d5", "d6"]) == 0
    for digest in ("d5", "d6"):
        mine = [k for k in client.deletes if k.startswith(f"prod/ns/m5/{digest}/")]
        assert mine[0] == f"prod/ns/m5/{digest}/{MARKER}" and len(mine) == 5
        assert list(s3.client().list(BUCKET, f"prod/ns/m5/{digest}/")) == []
    assert is_complete(s3.client(), BUCKET, "prod/ns/m5/keep")
    # The reader key may not delete: the cleanup fails with a reason, and removes nothing.
    monkeypatch.setattr(artifact_cli, "_client", real_client)
    for key, value in s3.env(s3.reader).items():
        monkeypatch.setenv(key, value)
    assert artifact_cli.main(["delete", "s3://store/prod/ns/m5", "keep"]) == 1
    assert "AccessDenied" in clean_env.read_text()
    assert is_complete(s3.client(), BUCKET, "prod/ns/m5/keep")


def write_spec(tmp_path: Path) -> Path:
    model = make_mlp(tmp_path / "mlp.onnx", sizes=(16, 32, 10))
    data = make_npz(tmp_path / "eval.npz", 16)
    doc = {
        "name": "mlp",
        "source": {"format": "onnx", "uri": str(model)},
        "optimization": {
            "accuracy": {"dataset": str(data), "metric": "maxAbsError", "maxDrop": 0.5},
            "benchmark": {"batchSizes": [1], "iterations": 3, "warmup": 1, "rounds": 3},
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_optimize_uploads_the_artifact_and_a_retried_job_reuses_it(
    s3: S3Server,
    tmp_path: Path,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in s3.env(s3.admin).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OPTISERVE_ARTIFACT_STORE", "s3://store/prod/ns/mlp")
    # As the operator renders it: keep no superseded artifact (storage.retention).
    monkeypatch.setenv("OPTISERVE_KEEP_SUPERSEDED", "0")
    monkeypatch.setenv("OPTISERVE_STALE_WORK_SECONDS", "3600")
    superseded = "9" * 64
    store_of(s3.client(), "prod/ns/mlp").upload(artifact(tmp_path / "old"), superseded, print)
    spec = write_spec(tmp_path)
    assert run_optimize(spec, tmp_path / "job1") == 0
    summary = json.loads(clean_env.read_text())
    digest = summary["digest"]
    assert summary["ok"] is True and summary["reused"] is False
    prefix = f"prod/ns/mlp/{digest}"
    assert is_complete(s3.client(), BUCKET, prefix)
    assert list(s3.client().list(BUCKET, f"prod/ns/mlp/{superseded}/")) == []
    pulled = pull_folder(s3.client(s3.reader), BUCKET, prefix, tmp_path / "pulled", quick(), print)
    assert tree(pulled) == tree(tmp_path / "job1" / digest)
    assert (pulled / "model_repository").is_dir()

    # A retried Job (a fresh emptyDir) finds the complete artifact: no optimization, no upload.
    assert run_optimize(spec, tmp_path / "job2") == 0
    again = json.loads(clean_env.read_text())
    assert again["reused"] is True and again["digest"] == digest
    assert tree(tmp_path / "job2" / digest) == tree(pulled)
    printed = capsys.readouterr()
    assert s3.admin.secret_key not in printed.out + printed.err + clean_env.read_text()


def test_retention_prunes_the_prefix_marker_first(s3: S3Server, tmp_path: Path) -> None:
    old, served, building = "1" * 64, "2" * 64, "3" * 64
    for digest in (old, served):
        store_of(s3.client(), "prod/ns/m7").upload(artifact(tmp_path / digest), digest, print)
    s3.put(BUCKET, "prod/ns/m7/unrelated.txt", b"left alone")
    client = RecordingClient(s3)
    retention = Retention(frozenset({served, building}), keep_superseded=0, stale_after=3600)
    lines: list[str] = []
    assert prune_store(store_of(client, "prod/ns/m7"), retention, time.time(), lines.append) == 1
    assert client.deletes[0] == f"prod/ns/m7/{old}/{MARKER}" and len(client.deletes) == 5
    left = {o.key.split("/")[3] for o in s3.client().list(BUCKET, "prod/ns/m7/")}
    assert left == {served, "unrelated.txt"}
    assert any(f"removed s3://store/prod/ns/m7/{old}/ (superseded" in line for line in lines)

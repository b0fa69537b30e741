"""An artifact folder in S3, visible only once whole (src/optiserve/remote/artifacts.py),
against a real SeaweedFS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from optiserve.remote.artifacts import (
    MARKER,
    IncompleteArtifactError,
    delete_folder,
    pull_folder,
    upload_folder,
)
from optiserve.remote.errors import AccessDeniedError, PinMismatchError
from optiserve.remote.fetch import FetchSettings
from optiserve_testing.binaries import BinariesUnavailable
from optiserve_testing.s3server import S3Server, start_s3

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        with start_s3(tmp_path_factory.mktemp("s3"), buckets=["artifacts"]) as server:
            yield server
    except BinariesUnavailable as exc:
        pytest.skip(str(exc))


def repository(root: Path) -> Path:
    files = {
        "model_repository/tiny/config.pbtxt": b'name: "tiny"\n',
        "model_repository/tiny/1/model.onnx": os.urandom(200_000),
        "report.json": b'{"ok": true}',
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def quick() -> FetchSettings:
    return FetchSettings(attempts=2, backoff_s=0.0, timeout_s=10, sleep=lambda s: None)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_an_uploaded_artifact_is_pulled_whole(s3: S3Server, tmp_path: Path) -> None:
    source = repository(tmp_path / "src")
    upload_folder(s3.client(), "artifacts", "ns/tiny/d1", source, print)
    dest = pull_folder(
        s3.client(s3.reader), "artifacts", "ns/tiny/d1", tmp_path / "d1", quick(), print
    )
    assert tree(dest) == tree(source)
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_an_upload_without_its_marker_is_not_an_artifact(s3: S3Server, tmp_path: Path) -> None:
    source = repository(tmp_path / "src")
    upload_folder(s3.client(), "artifacts", "ns/tiny/d2", source, print)
    s3.client().delete("artifacts", f"ns/tiny/d2/{MARKER}")  # as if the Job died before it
    with pytest.raises(
        IncompleteArtifactError, match=r"^s3://artifacts/ns/tiny/d2/: no completion"
    ):
        pull_folder(
            s3.client(s3.reader), "artifacts", "ns/tiny/d2", tmp_path / "d2", quick(), print
        )
    assert not (tmp_path / "d2").exists()


def test_a_file_replaced_after_the_marker_is_refused(s3: S3Server, tmp_path: Path) -> None:
    source = repository(tmp_path / "src")
    upload_folder(s3.client(), "artifacts", "ns/tiny/d3", source, print)
    s3.put("artifacts", "ns/tiny/d3/report.json", b'{"ok": false}')
    with pytest.raises(PinMismatchError, match=r"ns/tiny/d3/report\.json"):
        pull_folder(
            s3.client(s3.reader), "artifacts", "ns/tiny/d3", tmp_path / "d3", quick(), print
        )
    assert not (tmp_path / "d3").exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_delete_removes_every_object_marker_first(s3: S3Server, tmp_path: Path) -> None:
    upload_folder(s3.client(), "artifacts", "ns/tiny/d4", repository(tmp_path / "src"), print)
    assert delete_folder(s3.client(), "artifacts", "ns/tiny/d4") == 4
    assert list(s3.client().list("artifacts", "ns/tiny/d4/")) == []


def test_the_read_only_key_cannot_upload(s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(AccessDeniedError):
        upload_folder(s3.client(s3.reader), "artifacts", "ns/tiny/d5", repository(tmp_path), print)

"""An artifact folder in S3 that readers see only once it is whole (``storage.s3``: the
optimization Job uploads with :func:`upload_folder`, each Triton pod's init container pulls
with :func:`pull_folder`, the cleanup Job removes with :func:`delete_folder`).

S3 has no rename, so "renamed into place when complete" becomes: upload every file, then write
the completion marker LAST. The marker lists each file's size and sha256; a reader that finds
no marker treats the prefix as absent (a Job killed mid-upload leaves no artifact), and checks
every file it downloads against the marker (an object replaced afterwards is refused). Removal
deletes the marker FIRST, so a half-deleted artifact is never taken for a whole one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from optiserve.remote.errors import FetchError, NotFoundError
from optiserve.remote.fetch import (
    FetchSettings,
    fetch_one,
    remove_path,
    replace_path,
    retrying,
    s3_opener,
)
from optiserve.remote.s3 import S3Client

MARKER = ".optiserve-complete.json"

Log = Callable[[str], None]


class IncompleteArtifactError(NotFoundError):
    """The prefix has no completion marker: an upload that never finished (or none at all)."""

    reason = "IncompleteArtifact"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload_folder(
    client: S3Client,
    bucket: str,
    prefix: str,
    folder: Path,
    log: Log,
    settings: FetchSettings | None = None,
) -> None:
    """Uploads ``folder`` under ``prefix/`` (files first, the marker last); each PUT is
    retried as ``settings`` says (a PUT of the same bytes is idempotent)."""
    settings = settings or FetchSettings(attempts=1)
    prefix = prefix.strip("/")
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = {
        name: {"size": path.stat().st_size, "sha256": _sha256(path)} for name, path in files.items()
    }
    for name, path in files.items():
        key = f"{prefix}/{name}"
        retrying(
            functools.partial(client.put_file, bucket, key, path),
            f"s3://{bucket}/{key}",
            settings,
            log,
        )
    marker = json.dumps({"files": manifest}, sort_keys=True).encode()
    key = f"{prefix}/{MARKER}"
    retrying(lambda: client.put_bytes(bucket, key, marker), f"s3://{bucket}/{key}", settings, log)
    log(f"uploaded s3://{bucket}/{prefix}/: {len(files)} files, marker written")


def is_complete(client: S3Client, bucket: str, prefix: str) -> bool:
    """Whether ``prefix/`` holds a finished artifact (its marker exists)."""
    try:
        client.head(bucket, f"{prefix.strip('/')}/{MARKER}")
    except NotFoundError:
        return False
    return True


def read_marker(client: S3Client, bucket: str, prefix: str) -> dict[str, dict[str, int | str]]:
    """The marker's file list; IncompleteArtifactError when there is no marker."""
    prefix = prefix.strip("/")
    try:
        response = client.get(bucket, f"{prefix}/{MARKER}")
    except NotFoundError:
        raise IncompleteArtifactError(
            f"s3://{bucket}/{prefix}/", "no completion marker: the artifact is not (yet) whole"
        ) from None
    try:
        files: dict[str, dict[str, int | str]] = json.loads(response.read())["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (ValueError, KeyError, TypeError) as err:
        raise FetchError(f"s3://{bucket}/{prefix}/{MARKER}", f"unreadable marker: {err}") from None
    finally:
        response.close()
    return files


def pull_folder(
    client: S3Client,
    bucket: str,
    prefix: str,
    dest: Path,
    settings: FetchSettings,
    log: Log,
) -> Path:
    """Downloads a complete artifact to ``dest`` (renamed into place when every file matches
    the marker's size and sha256)."""
    prefix = prefix.strip("/")
    uri = f"s3://{bucket}/{prefix}/"
    files = retrying(lambda: read_marker(client, bucket, prefix), uri, settings, log)
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    remove_path(part)
    try:
        for name, meta in sorted(files.items()):
            target = part / name
            if ".." in Path(name).parts:
                raise FetchError(uri, f"refusing the file name {name!r} in the marker")
            target.parent.mkdir(parents=True, exist_ok=True)
            key = f"{prefix}/{name}"
            fetch_one(
                f"s3://{bucket}/{key}",
                target,
                s3_opener(client, bucket, key),
                int(meta["size"]),
                str(meta["sha256"]),
                settings,
                log,
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        replace_path(part, dest)
    finally:
        remove_path(part)
    return dest


def delete_folder(client: S3Client, bucket: str, prefix: str) -> int:
    """Removes the artifact under ``prefix/`` (the marker first); returns objects deleted."""
    prefix = prefix.strip("/")
    keys = [o.key for o in client.list(bucket, prefix + "/")]
    marker = f"{prefix}/{MARKER}"
    ordered = [k for k in keys if k == marker] + [k for k in keys if k != marker]
    for key in ordered:
        client.delete(bucket, key)
    return len(ordered)

"""The optimization report of an artifact in S3 (``storage.s3``), for ``optiserve report``.

The artifact's folder ``<prefix>/<namespace>/<name>/<digest>/`` holds ``report.json`` beside
``model_repository/``. It is read only through the completion marker, as a Triton pod pulls
the artifact (:mod:`optiserve.remote.artifacts`): a prefix without its marker is a Job's
unfinished upload, not a report, and the file must have the size and sha256 the marker lists,
so an object replaced after the upload is refused instead of shown.

Endpoint and credentials come from the caller's environment (the standard AWS variables,
``optiserve.remote.s3``), as for ``optiserve optimize`` on a laptop: whoever runs the command
needs their own read access to the prefix; nothing is read from the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from optiserve.remote.artifacts import read_marker
from optiserve.remote.errors import FetchError, NotFoundError
from optiserve.remote.fetch import FetchSettings, bucket_key, fetch_one, retrying, s3_opener
from optiserve.remote.s3 import S3Client, resolve_credentials

REPORT_OBJECT = "report.json"
# What status.artifact names inside the digest folder: the repository (``uri``), the page
# (``report``) or the report itself; any of them, or the folder, leads to the same report.
ARTIFACT_ENTRIES = ("model_repository", "report.html", REPORT_OBJECT)

Log = Callable[[str], None]


def artifact_folder(uri: str) -> tuple[str, str]:
    """``(bucket, digest folder)`` of an s3:// URI of the artifact, its repository, its page
    or its report."""
    bucket, key = bucket_key(uri)
    key = key.strip("/")
    head, _, last = key.rpartition("/")
    if last in ARTIFACT_ENTRIES:
        key = head
    if not key:
        raise FetchError(uri, "expected s3://BUCKET/PREFIX/NAMESPACE/NAME/DIGEST")
    return bucket, key


def fetch_report(
    uri: str, dest_dir: Path, env: Mapping[str, str], max_bytes: int, log: Log
) -> Path:
    """Downloads the artifact's ``report.json`` into ``dest_dir``, checked against the
    completion marker; returns its path. FetchError (typed: IncompleteArtifact, NotFound,
    AccessDenied, PinMismatch, TransferFailed) names the redacted URI, never a key."""
    settings = FetchSettings.from_env(env)
    client = S3Client(settings.s3, resolve_credentials(env), settings.timeout_s)
    bucket, folder = artifact_folder(uri)
    files = retrying(
        lambda: read_marker(client, bucket, folder), f"s3://{bucket}/{folder}/", settings, log
    )
    key = f"{folder}/{REPORT_OBJECT}"
    listed = files.get(REPORT_OBJECT)
    if listed is None:
        raise NotFoundError(f"s3://{bucket}/{key}", "the artifact's marker lists no report")
    size = int(listed["size"])
    if size > max_bytes:
        raise FetchError(f"s3://{bucket}/{key}", f"{size} bytes, larger than a report can be")
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / REPORT_OBJECT
    opener = s3_opener(client, bucket, key)
    fetch_one(f"s3://{bucket}/{key}", target, opener, size, str(listed["sha256"]), settings, log)
    return target

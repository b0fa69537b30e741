"""Model and data locations (``pvc://``, ``file://``, plain paths, ``s3://``, ``https://``),
resolved the same everywhere.

In a Job, each PersistentVolumeClaim named by a ``pvc://CLAIM/PATH`` URI is mounted at
``PVC_ROOT/CLAIM``; on a laptop ``PVC_ROOT`` is a local folder, so one spec runs in both places.
A remote URI (``s3://``, ``http(s)://``) is read from its staged copy under ``FETCH_ROOT``, which
``optiserve.remote.fetch`` fills before any pass runs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

PVC_ROOT_ENV = "OPTISERVE_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"
FETCH_ROOT_ENV = "OPTISERVE_FETCH_ROOT"
REMOTE_SCHEMES = frozenset({"s3", "http", "https"})


class UnsupportedUriError(ValueError):
    """The URI's scheme cannot be read from this process."""


@dataclass(frozen=True)
class ParsedUri:
    scheme: str  # "pvc", "file", "https", "http", "s3"
    claim: str | None  # pvc:// only
    path: str  # inside the claim for pvc://, absolute for file://


def parse_uri(uri: str) -> ParsedUri:
    if uri.startswith("pvc://"):
        claim, _, rest = uri.removeprefix("pvc://").partition("/")
        if not claim or not rest:
            raise UnsupportedUriError(f"{uri!r}: expected pvc://CLAIM/PATH")
        return ParsedUri("pvc", claim, rest)
    if uri.startswith("file://"):
        return ParsedUri("file", None, uri.removeprefix("file://"))
    if uri.startswith("/"):
        return ParsedUri("file", None, uri)
    scheme, sep, rest = uri.partition("://")
    if sep and scheme in {"http", "https", "s3"}:
        return ParsedUri(scheme, None, rest)
    raise UnsupportedUriError(f"{uri!r}: use pvc://CLAIM/PATH, file:///PATH or /PATH")


def pvc_root() -> Path:
    return Path(os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT))


def fetch_root() -> Path:
    configured = os.environ.get(FETCH_ROOT_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "optiserve" / "fetch"


def is_remote(uri: str | None) -> bool:
    """An ``s3://`` or ``http(s)://`` URI, fetched before use."""
    return uri is not None and uri.partition("://")[0] in REMOTE_SCHEMES


def staged_path(uri: str, root: Path | None = None) -> Path:
    """Where the fetched copy of a remote ``uri`` lives: ``<root>/<hash of the URI>/<name>``.

    The last path segment is kept (a loader may go by the suffix); the hash keeps two URIs
    with the same name apart. A folder (``s3://bucket/prefix/``) is staged as a folder."""
    bare = uri.partition("#")[0].partition("?")[0]
    name = bare.partition("://")[2].rstrip("/").rpartition("/")[2] or "content"
    return (root or fetch_root()) / hashlib.sha256(uri.encode()).hexdigest()[:16] / name


def local_path(uri: str, root: Path | None = None) -> Path:
    """Where ``uri`` is on this machine's file system (pvc:// under ``root``, a remote URI's
    staged copy under :func:`fetch_root`)."""
    parsed = parse_uri(uri)
    if parsed.scheme in REMOTE_SCHEMES:
        return staged_path(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "pvc":
        assert parsed.claim is not None
        return (root or pvc_root()) / parsed.claim / parsed.path
    raise UnsupportedUriError(f"{uri!r}: {parsed.scheme}:// cannot be read from here")


def claims_in(*uris: str | None) -> list[str]:
    """The PersistentVolumeClaims a set of URIs needs mounted, sorted, each once."""
    return sorted({p.claim for u in uris if u for p in [parse_uri(u)] if p.claim})

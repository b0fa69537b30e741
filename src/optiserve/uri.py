"""Model and data locations (``pvc://``, ``file://``, plain paths), resolved the same everywhere.

In a Job, each PersistentVolumeClaim named by a ``pvc://CLAIM/PATH`` URI is mounted at
``PVC_ROOT/CLAIM``; on a laptop ``PVC_ROOT`` is a local folder, so one spec runs in both places.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PVC_ROOT_ENV = "OPTISERVE_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"


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


def local_path(uri: str, root: Path | None = None) -> Path:
    """Where ``uri`` is on this machine's file system (pvc:// under ``root``)."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "pvc":
        assert parsed.claim is not None
        return (root or pvc_root()) / parsed.claim / parsed.path
    raise UnsupportedUriError(f"{uri!r}: {parsed.scheme}:// is not supported yet; copy it to a PVC")


def claims_in(*uris: str | None) -> list[str]:
    """The PersistentVolumeClaims a set of URIs needs mounted, sorted, each once."""
    return sorted({p.claim for u in uris if u for p in [parse_uri(u)] if p.claim})

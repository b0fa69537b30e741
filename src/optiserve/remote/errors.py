"""Typed fetch failures. Each message names the URI as :func:`redact` prints it, never a key."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(uri: str) -> str:
    """``uri`` without user info, query or fragment: a presigned URL's query string carries a
    signature, ``user:password@`` a password; neither belongs in a log line or a condition."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class FetchError(Exception):
    """A URI could not be fetched. ``str()`` names the (redacted) URI and the cause."""

    reason = "FetchFailed"

    def __init__(self, uri: str, cause: str) -> None:
        super().__init__(f"{redact(uri)}: {cause}")
        self.uri = redact(uri)
        self.cause = cause


class AccessDeniedError(FetchError):
    """The credentials were refused (unknown key, wrong secret, no permission)."""

    reason = "AccessDenied"


class NotFoundError(FetchError):
    """No such bucket, key, prefix or URL."""

    reason = "NotFound"


class PinMismatchError(FetchError):
    """The content's sha256 is not the pinned one (nothing is kept)."""

    reason = "PinMismatch"


class TransferError(FetchError):
    """The transfer kept failing (connection dropped, short body, server errors) after the
    bounded retries."""

    reason = "TransferFailed"


class UnpinnedError(FetchError):
    """An ``https://`` URI without a sha256 pin."""

    reason = "Unpinned"

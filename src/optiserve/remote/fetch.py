"""Fetch a remote URI to its staged path: streamed, retried (bounded), verified, renamed.

Guarantees: the staged path (:func:`optiserve.uri.staged_path`) only ever holds a whole,
verified copy. Bytes go to a ``.part-*`` sibling that is renamed into place once its size
matches what the server announced and its sha256 matches the pin; a failure removes it.

- ``s3://bucket/key``: one object; ``s3://bucket/prefix/`` (or a key that is no object but has
  objects under ``key/``): a folder, e.g. a Hugging Face ``save_pretrained`` folder.
- ``https://host/path#sha256=HEX`` (or the pin passed in): one file. A pin is REQUIRED for
  http(s): a URL carries no version and anyone between here and the server (a CDN, a proxy, a
  re-uploaded release asset) can change what it returns, while the recipe digest, which names
  the artifact, is computed from the URI alone. For ``s3://`` a pin is recommended (the
  bucket's credentials already guard who may change it).

Transient failures (connection refused or dropped, a short body, HTTP 5xx/429, timeouts) are
retried ``attempts`` times in all, with exponential backoff; a download resumes from the bytes
it has (a Range request). Refused credentials, a missing key and a wrong pin are not retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from optiserve.remote.errors import (
    FetchError,
    NotFoundError,
    PinMismatchError,
    TransferError,
    UnpinnedError,
    redact,
)
from optiserve.remote.s3 import (
    S3Client,
    S3Config,
    TransientError,
    _connection,
    resolve_credentials,
)
from optiserve.remote.tls import untrusted
from optiserve.uri import staged_path

PIN_FRAGMENT = "sha256="
CHUNK = 1 << 20
MAX_REDIRECTS = 5

Log = Callable[[str], None]
T = TypeVar("T")


class Stream(Protocol):
    status: int

    def read(self, amt: int) -> bytes: ...
    def getheader(self, name: str) -> str | None: ...
    def close(self) -> None: ...


@dataclass
class FetchSettings:
    """How hard to try, and where S3 is."""

    s3: S3Config = field(default_factory=S3Config)
    attempts: int = 4  # tries in all per file: a bounded retry, never a storm
    backoff_s: float = 1.0  # first wait; doubles each retry (1, 2, 4 s)
    timeout_s: float = 60.0  # per socket operation
    progress_every_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FetchSettings:
        return cls(s3=S3Config.from_env(env))


def split_pin(uri: str) -> tuple[str, str | None]:
    """``(uri without #fragment, pin)``; the pin comes from a ``#sha256=HEX`` fragment."""
    bare, _, fragment = uri.partition("#")
    if fragment.startswith(PIN_FRAGMENT):
        return bare, fragment.removeprefix(PIN_FRAGMENT).lower()
    return bare, None


def folder_sha256(path: Path) -> str:
    """A folder's pin: the sha256 of its sorted ``relative-path sha256`` lines (as
    ``source.sha256`` documents; the optimizer's ``path_sha256`` computes the same)."""
    lines = [
        f"{p.relative_to(path).as_posix()} {_file_sha256(p)}\n"
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    uri: str,
    *,
    pin: str | None = None,
    settings: FetchSettings | None = None,
    env: Mapping[str, str] | None = None,
    log: Log = print,
    root: Path | None = None,
) -> Path:
    """Fetches ``uri`` to its staged path (reused when already there and pinned) and returns
    that path. Raises a :class:`FetchError` subclass naming the redacted URI."""
    settings = settings or FetchSettings.from_env(env if env is not None else os.environ)
    bare, fragment_pin = split_pin(uri)
    pin = (pin or fragment_pin or "").lower() or None
    dest = staged_path(uri, root)
    scheme = bare.partition("://")[0]
    if scheme in ("http", "https") and pin is None:
        raise UnpinnedError(
            uri,
            "an http(s) URI needs a sha256 pin: add #sha256=<hex> to it (or set source.sha256)",
        )
    if pin and dest.exists() and _sha256_of(dest) == pin:
        log(f"fetch {redact(uri)}: already staged, sha256 matches the pin")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if scheme == "s3":
        env = env if env is not None else os.environ
        client = S3Client(settings.s3, resolve_credentials(env), settings.timeout_s)
        _fetch_s3(client, bare, dest, pin, settings, log)
    elif scheme in ("http", "https"):
        opener = _http_opener(bare, settings.timeout_s, settings.s3.ca_bundle)
        fetch_one(uri, dest, opener, None, pin, settings, log)
    else:
        raise FetchError(uri, f"{scheme}:// is not fetched; it is read in place")
    return dest


def _check_pin(uri: str, part: Path, pin: str | None) -> None:
    if pin and _sha256_of(part) != pin:
        raise PinMismatchError(uri, f"sha256 is not the pinned {pin[:12]}...; nothing was kept")


def _sha256_of(path: Path) -> str:
    return folder_sha256(path) if path.is_dir() else _file_sha256(path)


def remove_path(path: Path) -> None:
    """Removes a file or a folder tree, whichever ``path`` is; gone already is fine."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def bucket_key(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); the key may be empty (the bucket's root)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise FetchError(uri, "expected s3://BUCKET/KEY")
    return bucket, key


def _fetch_s3(
    client: S3Client, uri: str, dest: Path, pin: str | None, settings: FetchSettings, log: Log
) -> None:
    bucket, key = bucket_key(uri)
    if key and not key.endswith("/"):
        try:
            fetch_one(uri, dest, s3_opener(client, bucket, key), None, pin, settings, log)
            return
        except NotFoundError as missing:
            # Not an object: maybe a folder named without the trailing slash.
            def has_children() -> bool:
                return any(True for _ in client.list(bucket, key + "/"))

            try:
                found = retrying(has_children, uri, settings, log)
            except NotFoundError:  # no such bucket either
                raise missing from None
            if not found:
                raise NotFoundError(
                    uri, f"no object and no folder of objects under it ({missing.cause})"
                ) from None
    prefix = key.rstrip("/") + "/" if key else ""
    objects = retrying(lambda: list(client.list(bucket, prefix)), uri, settings, log)
    objects = [o for o in objects if not o.key.endswith("/")]
    if not objects:
        raise NotFoundError(uri, "no object and no folder of objects under this prefix")
    total = sum(o.size for o in objects)
    log(f"fetch {redact(uri)}: folder of {len(objects)} files, {_mib(total)}")
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    remove_path(part)
    try:
        for obj in objects:
            relative = obj.key[len(prefix) :]
            target = part / relative
            if ".." in Path(relative).parts:
                raise FetchError(uri, f"refusing the object name {relative!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            fetch_one(
                f"s3://{bucket}/{obj.key}",
                target,
                s3_opener(client, bucket, obj.key),
                obj.size,
                None,
                settings,
                log,
            )
        _check_pin(uri, part, pin)
        replace_path(part, dest)
    finally:
        remove_path(part)


def replace_path(part: Path, dest: Path) -> None:
    """Renames ``part`` to ``dest``, replacing a stale copy (a folder cannot be renamed over)."""
    if dest.is_dir():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        dest.rename(old)
        part.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        part.replace(dest)


Opener = Callable[[int], Stream]


def s3_opener(client: S3Client, bucket: str, key: str) -> Opener:
    """Opens the object at a byte offset (a resumed download asks for the rest)."""
    return lambda offset: client.get(bucket, key, offset)


def _http_opener(url: str, timeout_s: float, ca_bundle: str | None = None) -> Opener:
    def open_at(offset: int) -> Stream:
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(target)
            conn = _connection(parts.scheme, parts.netloc, timeout_s, ca_bundle)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
            except ssl.SSLCertVerificationError as err:
                conn.close()
                # Not transient (it is an OSError): a retry meets the same certificate.
                raise untrusted(target, err, ca_bundle) from None
            except BaseException:
                conn.close()
                raise
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location") or ""
                response.close()
                conn.close()
                target = (
                    location if "://" in location else f"{parts.scheme}://{parts.netloc}{location}"
                )
                continue
            if response.status in (200, 206):
                return response
            response.close()
            conn.close()
            if response.status >= 500 or response.status == 429:
                raise TransientError(f"HTTP {response.status}")
            if response.status == 404:
                raise NotFoundError(url, "not found (HTTP 404)")
            raise FetchError(url, f"the server answered HTTP {response.status}")
        raise FetchError(url, f"more than {MAX_REDIRECTS} redirects")

    return open_at


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, (TransientError, OSError, http.client.HTTPException, _ShortBody))


class _ShortBody(Exception):
    """The connection ended before the announced length."""


def retrying(call: Callable[[], T], uri: str, settings: FetchSettings, log: Log) -> T:
    """``call()``, again after a backoff while it fails transiently, up to the attempts."""
    for attempt in range(1, settings.attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not _transient(exc) or attempt == settings.attempts:
                if _transient(exc):
                    raise TransferError(uri, f"{_describe(exc)} (after {attempt} tries)") from None
                raise
            wait = settings.backoff_s * 2 ** (attempt - 1)
            log(
                f"fetch {redact(uri)}: {_describe(exc)}; "
                f"retry {attempt}/{settings.attempts - 1} in {wait:g}s"
            )
            settings.sleep(wait)
    raise AssertionError("unreachable")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _ShortBody):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def fetch_one(
    uri: str,
    dest: Path,
    open_at: Opener,
    expected: int | None,
    pin: str | None,
    settings: FetchSettings,
    log: Log,
) -> None:
    """Streams one file to ``dest`` through a ``.part`` sibling, resuming after a drop; renames
    it into place only when whole and (with ``pin``) verified."""
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    part.unlink(missing_ok=True)
    state = {"size": expected}
    try:
        retrying(lambda: _download(uri, part, open_at, state, settings, log), uri, settings, log)
        with part.open("rb+") as f:
            os.fsync(f.fileno())
        _check_pin(uri, part, pin)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def _download(
    uri: str,
    part: Path,
    open_at: Opener,
    state: dict[str, int | None],
    settings: FetchSettings,
    log: Log,
) -> None:
    have = part.stat().st_size if part.exists() else 0
    response = open_at(have)
    try:
        if have and response.status != 206:
            have = 0  # the server ignored the Range: start over
        length = response.getheader("Content-Length")
        remaining = int(length) if length is not None else None
        if remaining is not None:
            state["size"] = have + remaining
        total = state["size"]
        started = last = time.monotonic()
        with part.open("r+b" if have else "wb") as f:
            f.seek(have)
            f.truncate()
            got = have
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                now = time.monotonic()
                if now - last >= settings.progress_every_s:
                    last = now
                    log(_progress(uri, got, total, now - started))
        if total is not None and got != total:
            raise _ShortBody(f"connection closed after {got} of {total} bytes")
        log(f"fetch {redact(uri)}: {_mib(got)} done")
    finally:
        response.close()


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _progress(uri: str, got: int, total: int | None, elapsed: float) -> str:
    rate = got / max(elapsed, 1e-6) / (1 << 20)
    share = f" of {_mib(total)} ({100 * got // total}%)" if total else ""
    return f"fetch {redact(uri)}: {_mib(got)}{share}, {rate:.1f} MiB/s"

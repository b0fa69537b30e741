"""A small S3 client: SigV4-signed requests over ``http.client``, no SDK.

Why not boto3: botocore pins ``python-dateutil<3`` and the optimizer's environment already has
4.x; the five calls used here (GET, HEAD, PUT, DELETE, ListObjectsV2) and the three credential
sources below are a few hundred lines, and this way every byte of a download passes through
:mod:`optiserve.remote.fetch`, which counts, hashes and renames it.

Credentials, first found wins (the AWS SDKs' order for the sources supported):
1. ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``): a laptop, or a
   Job whose Secret the operator mapped into these variables;
2. ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` (+ ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``): EKS Pod
   Identity and ECS task roles;
3. ``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``: IRSA (STS AssumeRoleWithWebIdentity);
none: anonymous requests (public buckets).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import json
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode, urlsplit

from optiserve.remote.errors import AccessDeniedError, FetchError, NotFoundError
from optiserve.remote.tls import ca_bundle_from_env, ssl_context, untrusted

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
# No AWS-wide variable says path-style; the operator sets this one from spec.objectStore.
ADDRESSING_ENV = "OPTISERVE_S3_ADDRESSING"
DEFAULT_REGION = "us-east-1"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
}


class TransientError(Exception):
    """A failure worth retrying: a 5xx or 429 answer (connection errors are OSError)."""


@dataclass(frozen=True)
class S3Config:
    """Where the S3 API is and how buckets are addressed."""

    endpoint: str | None = None  # scheme://host[:port]; None: AWS's regional endpoint
    region: str = DEFAULT_REGION
    addressing: str = "auto"  # "path", "virtual", or "auto": path with an endpoint, else virtual
    ca_bundle: str | None = None  # a PEM file of CAs trusted besides the system's (tls.py)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Config:
        endpoint = next((env[k] for k in ENDPOINT_ENV if env.get(k)), None)
        region = next((env[k] for k in REGION_ENV if env.get(k)), DEFAULT_REGION)
        addressing = env.get(ADDRESSING_ENV) or "auto"
        return cls(endpoint, region, addressing, ca_bundle_from_env(env))

    @property
    def path_style(self) -> bool:
        return self.addressing == "path" or (self.addressing == "auto" and bool(self.endpoint))


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


def resolve_credentials(env: Mapping[str, str], timeout_s: float = 10.0) -> Credentials | None:
    """The first credentials the environment offers (see the module doc), or None."""
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
        )
    if env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return _container_credentials(env, timeout_s)
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
        return _web_identity_credentials(env, timeout_s)
    return None


def _http_get(url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = _connection(parts.scheme, parts.netloc, timeout_s)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request("GET", target, headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _container_credentials(env: Mapping[str, str], timeout_s: float) -> Credentials:
    url = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    headers = {}
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    token = (
        Path(token_file).read_text().strip()
        if token_file
        else env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "")
    )
    if token:
        headers["Authorization"] = token
    status, body = _http_get(url, headers, timeout_s)
    if status != 200:
        raise AccessDeniedError(url, f"the pod identity agent answered HTTP {status}")
    doc = json.loads(body)
    return Credentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("Token"))


def _web_identity_credentials(env: Mapping[str, str], timeout_s: float) -> Credentials:
    region = next((env[k] for k in REGION_ENV if env.get(k)), DEFAULT_REGION)
    sts = env.get("AWS_ENDPOINT_URL_STS") or f"https://sts.{region}.amazonaws.com"
    query = urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": env["AWS_ROLE_ARN"],
            "RoleSessionName": env.get("AWS_ROLE_SESSION_NAME") or "optiserve",
            "WebIdentityToken": Path(env["AWS_WEB_IDENTITY_TOKEN_FILE"]).read_text().strip(),
        }
    )
    status, body = _http_get(f"{sts.rstrip('/')}/?{query}", {}, timeout_s)
    if status != 200:
        raise AccessDeniedError(sts, f"STS refused the web identity (HTTP {status})")
    root = ET.fromstring(body)
    found = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
    return Credentials(found["AccessKeyId"], found["SecretAccessKey"], found.get("SessionToken"))


def _connection(
    scheme: str, netloc: str, timeout_s: float, ca_bundle: str | None = None
) -> http.client.HTTPConnection:
    if scheme == "https":
        # The system's roots (SSL_CERT_FILE / SSL_CERT_DIR move them) plus ca_bundle's CAs.
        return http.client.HTTPSConnection(
            netloc, timeout=timeout_s, context=ssl_context(ca_bundle)
        )
    if scheme == "http":
        return http.client.HTTPConnection(netloc, timeout=timeout_s)
    raise ValueError(f"unsupported endpoint scheme {scheme!r}")


def _sign(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signature_v4(
    credentials: Credentials,
    region: str,
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: dict[str, str],
    payload_hash: str,
    now: dt.datetime,
) -> None:
    """Adds the SigV4 ``Authorization`` (and ``x-amz-*``) headers to ``headers`` in place."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers["host"] = host
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload_hash
    if credentials.token:
        headers["x-amz-security-token"] = credentials.token
    canonical_headers = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed = ";".join(sorted(canonical_headers))
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    canonical = "\n".join(
        [
            method,
            quote(path, safe="/-_.~"),
            canonical_query,
            "".join(f"{k}:{canonical_headers[k]}\n" for k in sorted(canonical_headers)),
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _sign(f"AWS4{credentials.secret_key}".encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _sign(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    modified: float = 0.0  # LastModified, seconds since the epoch (listings only)


def _timestamp(text: str | None) -> float:
    """ListObjectsV2's ``LastModified`` (ISO 8601, UTC) as seconds; 0 when absent or odd."""
    if not text:
        return 0.0
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class S3Client:
    """One bucket-agnostic client; each call opens its own connection (a retry starts clean)."""

    def __init__(
        self, config: S3Config, credentials: Credentials | None, timeout_s: float = 60.0
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.timeout_s = timeout_s

    def _target(self, bucket: str, key: str) -> tuple[str, str, str]:
        """(scheme, host, path) of ``bucket/key`` under the configured addressing."""
        endpoint = self.config.endpoint or f"https://s3.{self.config.region}.amazonaws.com"
        parts = urlsplit(endpoint)
        base = parts.path.rstrip("/")
        if not bucket:  # the service itself (ListBuckets)
            return parts.scheme, parts.netloc, f"{base}/"
        if self.config.path_style:
            return parts.scheme, parts.netloc, f"{base}/{bucket}/{key}"
        return parts.scheme, f"{bucket}.{parts.netloc}", f"{base}/{key}"

    def request(
        self,
        method: str,
        bucket: str,
        key: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: BinaryIO | bytes | None = None,
        payload_hash: str = UNSIGNED_PAYLOAD,
        ok: tuple[int, ...] = (200,),
    ) -> http.client.HTTPResponse:
        """Sends one signed request; returns the open response when its status is in ``ok``.

        Raises NotFoundError (404), AccessDeniedError (401/403 and the credential error codes),
        TransientError (5xx, 429), FetchError (any other status); OSError and
        http.client.HTTPException pass through (the caller retries those)."""
        scheme, host, path = self._target(bucket, key)
        query = dict(query or {})
        all_headers = dict(headers or {})
        if self.credentials is not None:
            signature_v4(
                self.credentials,
                self.config.region,
                method,
                host,
                path,
                query,
                all_headers,
                payload_hash,
                dt.datetime.now(dt.UTC),
            )
        target = quote(path, safe="/-_.~") + (
            "?" + urlencode(sorted(query.items()), quote_via=quote, safe="-_.~") if query else ""
        )
        conn = _connection(scheme, host, self.timeout_s, self.config.ca_bundle)
        try:
            conn.request(method, target, body=body, headers=all_headers)
            response = conn.getresponse()
        except ssl.SSLCertVerificationError as err:
            conn.close()
            # Not transient: a retry meets the same certificate.
            raise untrusted(f"{scheme}://{host}{path}", err, self.config.ca_bundle) from None
        except BaseException:
            conn.close()
            raise
        if response.status in ok:
            return response
        detail = response.read(64 * 1024)
        conn.close()
        raise _status_error(f"s3://{bucket}/{key}", response.status, detail)

    def get(self, bucket: str, key: str, offset: int = 0) -> http.client.HTTPResponse:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return self.request("GET", bucket, key, headers=headers, ok=(200, 206))

    def head(self, bucket: str, key: str) -> ObjectInfo:
        response = self.request("HEAD", bucket, key)
        response.read()
        response.close()
        return ObjectInfo(
            key,
            int(response.getheader("Content-Length") or 0),
            (response.getheader("ETag") or "").strip('"'),
        )

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (ListObjectsV2, page by page)."""
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            response = self.request("GET", bucket, "", query=query)
            root = ET.fromstring(response.read())
            response.close()
            for item in root.iter(f"{_S3_NS}Contents"):
                yield ObjectInfo(
                    item.findtext(f"{_S3_NS}Key") or "",
                    int(item.findtext(f"{_S3_NS}Size") or 0),
                    (item.findtext(f"{_S3_NS}ETag") or "").strip('"'),
                    _timestamp(item.findtext(f"{_S3_NS}LastModified")),
                )
            token = root.findtext(f"{_S3_NS}NextContinuationToken")
            if root.findtext(f"{_S3_NS}IsTruncated") != "true" or not token:
                return

    def put_file(self, bucket: str, key: str, path: Path) -> None:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        size = path.stat().st_size
        with path.open("rb") as f:
            response = self.request(
                "PUT",
                bucket,
                key,
                headers={"Content-Length": str(size)},
                body=f,
                payload_hash=digest.hexdigest(),
            )
        response.read()
        response.close()

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        response = self.request(
            "PUT",
            bucket,
            key,
            headers={"Content-Length": str(len(data))},
            body=data,
            payload_hash=hashlib.sha256(data).hexdigest(),
        )
        response.read()
        response.close()

    def delete(self, bucket: str, key: str) -> None:
        response = self.request("DELETE", bucket, key, ok=(200, 204), payload_hash=EMPTY_SHA256)
        response.read()
        response.close()


def _status_error(uri: str, status: int, body: bytes) -> Exception:
    code = ""
    with contextlib.suppress(ET.ParseError):
        code = ET.fromstring(body).findtext("Code") or ""
    detail = f"HTTP {status}{' ' + code if code else ''}"
    if status >= 500 or status == 429:
        return TransientError(detail)
    if status == 404:
        return NotFoundError(uri, f"not found ({detail})")
    if status in (401, 403) or code in _DENIED_CODES:
        return AccessDeniedError(
            uri, f"access denied ({detail}): check the credentials and the bucket's permissions"
        )
    return FetchError(uri, f"the server refused the request ({detail})")

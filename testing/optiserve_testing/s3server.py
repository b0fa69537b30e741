"""A real S3 server for the tests: SeaweedFS (``weed server -s3``) on loopback ports.

The pinned ``weed`` binary is built by hack/seaweedfs/build.sh (cached under
~/.cache/optiserve/bin/weed-<version>/). :func:`start_s3` writes an identities file with three
keys made up for the run (``admin``: read and write; ``reader``: read and list only; ``wrong``:
a key the server does not know), starts master, volume, filer and S3 gateway in one process
group, waits until the gateway answers, and creates the requested buckets.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from optiserve.remote.s3 import Credentials, S3Client, S3Config
from optiserve_testing.binaries import REPO_ROOT, BinariesUnavailable, cache_root, go_command
from optiserve_testing.processes import ManagedProcess, free_ports

BUILD_SCRIPT = REPO_ROOT / "hack" / "seaweedfs" / "build.sh"
VERSIONS_FILE = REPO_ROOT / "hack" / "seaweedfs" / "versions.env"


def weed_binary() -> Path:
    """The pinned ``weed``, built first when missing unless OPTISERVE_CLUSTER_BUILD=0."""
    version = next(
        line.split("=", 1)[1].strip()
        for line in VERSIONS_FILE.read_text().splitlines()
        if line.startswith("SEAWEEDFS_VERSION=")
    )
    path = cache_root() / f"weed-{version}" / "weed"
    if os.access(path, os.X_OK):
        return path
    go = go_command()
    if os.environ.get("OPTISERVE_CLUSTER_BUILD", "1") == "0" or go is None:
        raise BinariesUnavailable(f"{path} is not built (run hack/seaweedfs/build.sh; it needs Go)")
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env={**os.environ, "GO": str(go), "OPTISERVE_BIN_CACHE": str(cache_root())},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not os.access(path, os.X_OK):
        raise BinariesUnavailable(
            f"hack/seaweedfs/build.sh failed (exit {result.returncode}):\n"
            + (result.stdout + result.stderr)[-4000:]
        )
    return path


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    region: str
    admin: Credentials  # read, write, list, admin
    reader: Credentials  # read and list only
    wrong: Credentials  # unknown to the server
    process: ManagedProcess

    def client(self, credentials: Credentials | None = None) -> S3Client:
        config = S3Config(self.endpoint, self.region, "path")
        return S3Client(config, credentials or self.admin, timeout_s=30.0)

    def env(self, credentials: Credentials | None = None) -> dict[str, str]:
        """The variables a process needs to reach this server (as the Job gets them)."""
        creds = credentials or self.reader
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": self.region,
            "OPTISERVE_S3_ADDRESSING": "path",
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        }

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_bytes(bucket, key, data)

    def create_bucket(self, bucket: str) -> None:
        response = self.client().request("PUT", bucket, "", payload_hash=_EMPTY)
        response.read()
        response.close()


_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _credentials(name: str) -> Credentials:
    return Credentials(f"{name.upper()}{secrets.token_hex(6).upper()}", secrets.token_urlsafe(24))


def _identities(admin: Credentials, reader: Credentials) -> dict[str, object]:
    def identity(name: str, creds: Credentials, actions: list[str]) -> dict[str, object]:
        return {
            "name": name,
            "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
            "actions": actions,
        }

    return {
        "identities": [
            identity("admin", admin, ["Admin", "Read", "List", "Tagging", "Write"]),
            identity("reader", reader, ["Read", "List"]),
        ]
    }


def _gateway_up(endpoint: str) -> bool:
    client = S3Client(S3Config(endpoint, "us-east-1", "path"), None, timeout_s=2.0)
    try:
        client.request("GET", "", "", ok=(200, 403)).close()
    except Exception:  # not up yet (refused, reset, 5xx while the filer starts)
        return False
    return True


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int) -> list[int]:
    """Free ports whose +10000 neighbours (each server's gRPC port) are free too."""
    usable: list[int] = []
    while len(usable) < count:
        usable += [
            p
            for p in free_ports(count)
            if p + 10000 < 65536 and p not in usable and _bindable(p + 10000)
        ]
    return usable[:count]


@contextmanager
def start_s3(
    workdir: Path, buckets: Sequence[str] = (), region: str = "us-east-1", timeout_s: float = 90
) -> Iterator[S3Server]:
    """A running SeaweedFS with S3 on loopback; stopped (process group) on exit."""
    weed = weed_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    admin, reader, wrong = _credentials("admin"), _credentials("reader"), _credentials("wrong")
    config = workdir / "s3-identities.json"
    config.write_text(json.dumps(_identities(admin, reader)))
    config.chmod(0o600)
    master, volume, filer, s3 = _ports(4)
    argv = [
        str(weed),
        "server",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master + 10000}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume + 10000}",
        "-volume.max=20",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer + 10000}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        # Off: side servers on fixed ports (two test servers would collide) and telemetry.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.iam=false",
        "-master.telemetry=false",
    ]
    (workdir / "data").mkdir(exist_ok=True)
    process = ManagedProcess("weed", argv, workdir / "weed.log")
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _gateway_up(endpoint):
            if process.exited() or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start:\n{process.log_tail()}")
            time.sleep(0.3)
        server = S3Server(endpoint, region, admin, reader, wrong, process)
        for bucket in buckets:
            _retry_until_up(lambda b=bucket: server.create_bucket(b), deadline, process)
        yield server
    finally:
        process.stop(grace_s=10)


def _retry_until_up(call: object, deadline: float, process: ManagedProcess) -> None:
    # Right after the gateway answers, the first write can still fail while the master grows
    # its first volume; retry until the deadline.
    assert callable(call)
    while True:
        try:
            call()
            return
        except Exception:
            if time.monotonic() > deadline or process.exited():
                raise
            time.sleep(0.5)

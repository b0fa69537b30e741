"""The pods' side of ``storage.s3``: pull an artifact, delete artifacts.

``python -m optiserve.remote.artifact_cli pull s3://BUCKET/PREFIX/DIGEST DEST``
    The Triton pod's first init container: the artifact under the prefix, checked against its
    completion marker (every file's size and sha256), renamed into ``DEST`` when whole.
``python -m optiserve.remote.artifact_cli delete s3://BUCKET/MODEL-PREFIX DIGEST...``
    The cleanup Job (``keepArtifactsOnDelete: false``): each digest's objects, marker first.

Endpoint and credentials come from the standard AWS variables (``optiserve.remote.s3``), which
the operator maps from ``spec.objectStore`` and its Secret. A failure exits 1 with one line
naming the (redacted) URI and the cause, also written as the container's termination message;
no credential is ever printed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from optiserve.remote.artifacts import delete_folder, pull_folder
from optiserve.remote.errors import FetchError
from optiserve.remote.fetch import FetchSettings, bucket_key, retrying
from optiserve.remote.s3 import S3Client, resolve_credentials

TERMINATION_LOG_ENV = "OPTISERVE_TERMINATION_MESSAGE_PATH"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def _log(line: str) -> None:
    print(line, flush=True)


def _client(settings: FetchSettings) -> S3Client:
    return S3Client(settings.s3, resolve_credentials(os.environ), settings.timeout_s)


def pull(uri: str, dest: Path) -> None:
    settings = FetchSettings.from_env(os.environ)
    bucket, prefix = bucket_key(uri)
    pull_folder(_client(settings), bucket, prefix, dest, settings, _log)
    _log(f"pulled {uri} into {dest}")


def delete(uri: str, digests: Sequence[str]) -> None:
    settings = FetchSettings.from_env(os.environ)
    client = _client(settings)
    bucket, prefix = bucket_key(uri)
    for digest in digests:
        target = f"{prefix.strip('/')}/{digest}"
        removed = retrying(
            functools.partial(delete_folder, client, bucket, target),
            f"s3://{bucket}/{target}/",
            settings,
            _log,
        )
        _log(f"removed s3://{bucket}/{target}/ ({removed} objects)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optiserve.remote.artifact_cli",
        description="Pull or delete optiserve artifacts kept under an S3 prefix.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pull_cmd = commands.add_parser("pull", help="download one complete artifact")
    pull_cmd.add_argument("uri", help="s3://BUCKET/PREFIX/DIGEST")
    pull_cmd.add_argument("dest", type=Path, help="folder to create")
    delete_cmd = commands.add_parser("delete", help="delete artifacts, marker first")
    delete_cmd.add_argument("uri", help="s3://BUCKET/MODEL-PREFIX")
    delete_cmd.add_argument("digests", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "pull":
            pull(args.uri, args.dest)
        else:
            delete(args.uri, args.digests)
    except (FetchError, OSError, ValueError) as err:  # ValueError: a bad endpoint
        reason = getattr(err, "reason", type(err).__name__)
        message = f"cannot {args.command} the artifact ({reason}): {err}"
        print(message, file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):
            path = os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG)
            Path(path).write_text(message[:4096])
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

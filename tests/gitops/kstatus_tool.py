"""The kstatus helper (tests/gitops/kstatus): built once with Go, cached, then run per object.

kstatus is the library Flux (kustomize-controller, helm-controller), kpt and cli-utils use to
decide whether an applied object is Current, InProgress or Failed. Its Go code is the only
faithful answer, so the tests run it rather than re-implement it. The binary is cached under
``~/.cache/optiserve/bin/kstatus-<hash>/`` keyed by the hash of go.mod, go.sum and main.go, so
a changed pin or program rebuilds it and nothing else does.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiserve_testing.binaries import cache_root, go_command

SOURCE = Path(__file__).resolve().parent / "kstatus"
SOURCE_FILES = ("go.mod", "go.sum", "main.go")
BUILD_TIMEOUT_S = 1800  # first build compiles k8s.io/apimachinery and k8s.io/api/core/v1


class KstatusUnavailable(RuntimeError):
    """No Go toolchain to build the helper with."""


class KstatusBuildError(RuntimeError):
    """``go build`` failed (a broken pin, no module proxy and an empty module cache, ...)."""


@dataclass(frozen=True)
class Verdict:
    status: str  # Current | InProgress | Failed | Terminating | Unknown
    message: str


def source_hash() -> str:
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0" + (SOURCE / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def binary_path() -> Path:
    return cache_root() / f"kstatus-{source_hash()}" / "kstatus"


def ensure_kstatus() -> Path:
    """The cached binary, building it first when absent (one build at a time, -p 1)."""
    target = binary_path()
    if os.access(target, os.X_OK):
        return target
    go = go_command()
    if go is None:
        raise KstatusUnavailable(
            "the kstatus helper is not built and no Go toolchain was found "
            "(install Go or set GO=/path/to/go)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it now
        if os.access(target, os.X_OK):
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / "kstatus"
            result = subprocess.run(
                [str(go), "build", "-p", "1", "-trimpath", "-o", str(built), "."],
                cwd=SOURCE,
                env={**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false"},
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0:
                raise KstatusBuildError(
                    f"go build of {SOURCE} failed (exit {result.returncode}):\n"
                    + (result.stdout + result.stderr)[-4000:]
                )
            built.replace(target)  # atomic: a reader never sees half a binary
    return target


def compute(binary: Path, obj: dict[str, Any]) -> Verdict:
    """What kstatus says about ``obj``."""
    result = subprocess.run(
        [str(binary)],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kstatus failed (exit {result.returncode}): {result.stderr.strip()}")
    answer = json.loads(result.stdout)
    return Verdict(status=answer["status"], message=answer["message"])

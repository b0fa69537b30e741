"""Fixtures for the `images` tier: the images `make images` built for this checkout's inputs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from optiserve_testing.image_exec import ExecSpec, Mount, launcher_argv, write_spec
from optiserve_testing.images import BuiltImage, require_built_images


@pytest.fixture(scope="session")
def images() -> dict[str, BuiltImage]:
    return require_built_images()


def run_in_image(
    image: BuiltImage,
    argv: Sequence[str],
    scratch: Path,
    *,
    env: Mapping[str, str] | None = None,
    hide: Sequence[str] = (),
    timeout: float = 300,
) -> tuple[int, str, str]:
    """Run argv in the image as its user, root read-only, a writable /tmp (the chart's emptyDir)."""
    tmp = scratch / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o1777)
    uid, gid = image.user
    spec = ExecSpec(
        image=image.reference,
        rootfs=str(image.rootfs()),
        argv=list(argv),
        env={**image.env, **(env or {})},
        uid=uid,
        gid=gid,
        scratch=str(scratch / "container"),
        cwd=str(image.config.get("WorkingDir") or "/"),
        mounts=[Mount(str(tmp), "/tmp")],
        hide=[*image.hidden, *hide],
    )
    result = subprocess.run(
        launcher_argv(write_spec(spec, scratch / "spec.json")),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        cwd=Path(__file__).resolve().parents[2],
    )
    return result.returncode, result.stdout, result.stderr

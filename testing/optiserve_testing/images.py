"""The images `make images` built (hack/images/build.sh), unpacked for running without a runtime.

`built_images()` finds the OCI archives for the checkout's current inputs (build.sh
--print-dir: the folder is keyed by a hash of the Dockerfile, pyproject, constraints and
sources, so a stale build is never found). `BuiltImage.rootfs()` unpacks an archive's layers
in order, as a container runtime would (whiteouts included), once per manifest digest, into a
folder beside the archive; `BuiltImage.config` is the image's own config (Entrypoint, Env, User,
WorkingDir), which tests and the pod runner follow instead of repeating it.

Running a command in such a root filesystem is testing/optiserve_testing/image_exec.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "images" / "build.sh"
IMAGE_NAMES = ("operator", "optimizer")
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class ImageError(RuntimeError):
    """An image is missing, unreadable or cannot run what it was asked to."""


@dataclass(frozen=True)
class BuiltImage:
    name: str  # operator / optimizer: the Dockerfile target
    archive: Path
    # Paths a container of this image does not see: a test's broken image (a missing package)
    # without building one. Empty for the image as built.
    hidden: tuple[str, ...] = ()

    def without(self, *paths: str) -> BuiltImage:
        """This image with `paths` removed from the containers' view (a broken image)."""
        return dataclasses.replace(self, hidden=(*self.hidden, *paths))

    def site_packages(self) -> str:
        """The image's venv site-packages folder, as a container path."""
        root = self.rootfs()
        found = next((root / "opt/venv/lib").glob("python3*/site-packages"))
        return "/" + str(found.relative_to(root))

    @functools.cached_property
    def _index(self) -> dict[str, Any]:
        return _read_json(self.archive, "index.json")

    @property
    def reference(self) -> str:
        """The name:tag the archive carries (ghcr.io/optiserve/<name>:<version>)."""
        annotations = self._index["manifests"][0].get("annotations") or {}
        return str(annotations.get("org.opencontainers.image.ref.name", ""))

    @functools.cached_property
    def manifest(self) -> dict[str, Any]:
        return _read_json(self.archive, _blob(self._index["manifests"][0]["digest"]))

    @property
    def digest(self) -> str:
        return str(self._index["manifests"][0]["digest"])

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """The OCI image config's `config` part: Entrypoint, Cmd, Env, User, WorkingDir."""
        document = _read_json(self.archive, _blob(self.manifest["config"]["digest"]))
        config: dict[str, Any] = document.get("config") or {}
        return config

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or [])

    @property
    def user(self) -> tuple[int, int]:
        """(uid, gid) of the image's USER; numeric, as the Dockerfile promises."""
        user, _, group = str(self.config.get("User") or "0").partition(":")
        if not user.isdigit() or not (group or user).isdigit():
            raise ImageError(f"{self.reference}: USER {user!r} is not numeric")
        return int(user), int(group or user)

    def rootfs(self) -> Path:
        """The unpacked root filesystem (unpacked on first use, then reused)."""
        target = self.archive.with_name(f"{self.name}.rootfs")
        stamp = self.archive.with_name(f".{self.name}.rootfs-{self.digest.replace(':', '-')}")
        if stamp.exists():
            return target
        with _locked(self.archive.with_name(f".{self.name}.rootfs.lock")):
            if not stamp.exists():
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
                with tarfile.open(self.archive) as outer:
                    for layer in self.manifest["layers"]:
                        blob = outer.extractfile(_blob(layer["digest"]))
                        if blob is None:
                            raise ImageError(f"{self.archive}: layer {layer['digest']} missing")
                        apply_layer(blob, target)
                stamp.touch()
        return target


def _blob(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"blobs/{algorithm}/{value}"


def _read_json(archive: Path, member: str) -> dict[str, Any]:
    try:
        with tarfile.open(archive) as tar:
            file = tar.extractfile(member)
            if file is None:
                raise ImageError(f"{archive}: {member} is not a file")
            document: dict[str, Any] = json.load(file)
            return document
    except (OSError, tarfile.TarError, KeyError, json.JSONDecodeError) as err:
        raise ImageError(f"{archive}: not a readable OCI archive ({err})") from err


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def apply_layer(blob: IO[bytes], root: Path) -> None:
    """Extract one layer (a tar, compressed or not) onto root, honouring OCI whiteouts: `.wh.x`
    deletes x from the layers below, `.wh..wh..opq` empties its folder of what they put there."""
    extracted: set[PurePosixPath] = set()
    real_root = root.resolve()
    with tarfile.open(fileobj=blob, mode="r|*") as tar:
        for member in tar:
            path = PurePosixPath(member.name.removeprefix("./").lstrip("/") or ".")
            parent = (root / path.parent).resolve()
            if ".." in path.parts or not parent.is_relative_to(real_root):
                raise ImageError(f"layer entry {member.name!r} leaves the root filesystem")
            base = path.name
            if base == OPAQUE:
                folder = root / path.parent
                for child in list(folder.iterdir()) if folder.is_dir() else []:
                    if path.parent / child.name not in extracted:
                        _remove(child)
                continue
            if base.startswith(WHITEOUT):
                _remove(root / path.parent / base.removeprefix(WHITEOUT))
                continue
            existing = root / path
            if existing.is_symlink() or (existing.exists() and not existing.is_dir()):
                existing.unlink()  # a later layer replaces a file, never writes through it
            tar.extract(member, root, numeric_owner=True, filter="fully_trusted")
            extracted.add(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def images_dir() -> Path:
    """The folder build.sh writes for the checkout's current inputs (it may not exist yet), or
    OPTISERVE_IMAGES_DIR: images built elsewhere (an older build, another machine's)."""
    if os.environ.get("OPTISERVE_IMAGES_DIR"):
        return Path(os.environ["OPTISERVE_IMAGES_DIR"])
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return Path(result.stdout.strip())


def built_images(directory: Path | None = None) -> dict[str, BuiltImage]:
    """name -> BuiltImage for a finished build of the current inputs; {} when there is none."""
    folder = images_dir() if directory is None else directory
    if not (folder / ".complete").exists():
        return {}
    return {name: BuiltImage(name, folder / f"{name}.oci.tar") for name in IMAGE_NAMES}


def images_by_reference(images: Mapping[str, BuiltImage]) -> dict[str, BuiltImage]:
    """reference (ghcr.io/optiserve/operator:0.1.0) -> image, for matching a pod's image."""
    return {image.reference: image for image in images.values()}


def pip_ca_bundle() -> Path | None:
    """The CA bundle build.sh hands pip as a build secret: OPTISERVE_PIP_CA, else pip's own."""
    named = os.environ.get("OPTISERVE_PIP_CA")
    pip = shutil.which("pip")
    if not named and pip is not None:
        result = subprocess.run(
            [pip, "config", "get", "global.cert"], capture_output=True, text=True, check=False
        )
        named = result.stdout.strip()
    named = named or os.environ.get("PIP_CERT", "")
    return Path(named) if named else None


def require_built_images() -> dict[str, BuiltImage]:
    """The built images, or a skip saying why (a failure in CI: OPTISERVE_REQUIRE_TIERS=1)."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("running in an image's root filesystem needs root (mount, chroot)")
    found = built_images()
    if not found:
        pytest.skip(f"no images built for these inputs ({images_dir()}): run `make images`")
    return found

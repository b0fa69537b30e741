"""Where the pinned control-plane binaries live, and building them with hack/cluster/build.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "cluster" / "build.sh"
VERSIONS_FILE = REPO_ROOT / "hack" / "cluster" / "versions.env"
DEFAULT_GO = Path("/usr/local/go/bin/go")

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
VERSION_KEYS = {
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kube-proxy": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "kwok": "KWOK_VERSION",
    "helm": "HELM_VERSION",
    "kube-score": "KUBE_SCORE_VERSION",
}


class BinariesUnavailable(RuntimeError):
    """The binaries are not built and cannot be (no Go toolchain), or the build failed."""


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """KEY=VALUE lines of versions.env (comments and blank lines skipped)."""
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


def cache_root() -> Path:
    configured = os.environ.get("OPTISERVE_BIN_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "optiserve" / "bin"


@dataclass(frozen=True)
class Binaries:
    root: Path
    versions: dict[str, str]

    def dir_of(self, name: str) -> Path:
        return self.root / f"{name}-{self.versions[VERSION_KEYS[name]]}"

    def path(self, name: str) -> Path:
        return self.dir_of(name) / name

    @property
    def kubernetes_version(self) -> str:
        return self.versions["KUBERNETES_VERSION"]

    @property
    def kwok_stages(self) -> Path:
        return self.dir_of("kwok") / "stages"

    def missing(self, names: tuple[str, ...] = CONTROL_PLANE) -> list[str]:
        absent = [name for name in names if not os.access(self.path(name), os.X_OK)]
        if "kwok" in names and "kwok" not in absent and not self.kwok_stages.is_dir():
            absent.append("kwok")
        return absent

    def kubectl(self) -> Path:
        """The pinned kubectl when it was built, else the one on PATH (version skew allowing)."""
        pinned = self.path("kubectl")
        if os.access(pinned, os.X_OK):
            return pinned
        found = shutil.which("kubectl")
        if found is None:
            raise BinariesUnavailable("no kubectl: run hack/cluster/build.sh kubectl")
        return Path(found)


def go_command() -> Path | None:
    configured = os.environ.get("GO") or shutil.which("go")
    if configured:
        return Path(configured)
    return DEFAULT_GO if DEFAULT_GO.exists() else None


def ensure_binaries(names: tuple[str, ...] = CONTROL_PLANE) -> Binaries:
    """Return the cached binaries, building the missing ones first (slow once, then cached)."""
    binaries = Binaries(cache_root(), read_versions())
    missing = binaries.missing(names)
    if not missing:
        return binaries
    go = go_command()
    if go is None:
        raise BinariesUnavailable(
            f"control-plane binaries {missing} are not built and no Go toolchain was found "
            "(install Go or set GO=/path/to/go, then run hack/cluster/build.sh)"
        )
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *missing],
        env={**os.environ, "GO": str(go), "OPTISERVE_BIN_CACHE": str(binaries.root)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or binaries.missing(names):
        raise BinariesUnavailable(
            f"hack/cluster/build.sh {' '.join(missing)} failed (exit {result.returncode}):\n"
            + (result.stdout + result.stderr)[-4000:]
        )
    return binaries


def control_plane_binaries(extra: tuple[str, ...] = ()) -> Binaries:
    """The control plane's binaries (and ``extra`` ones, e.g. kube-proxy), built first when
    missing, unless OPTISERVE_CLUSTER_BUILD=0 (then a BinariesUnavailable naming what is
    missing)."""
    names = CONTROL_PLANE + extra
    if os.environ.get("OPTISERVE_CLUSTER_BUILD", "1") == "0":
        binaries = Binaries(cache_root(), read_versions())
        missing = binaries.missing(names)
        if missing:
            raise BinariesUnavailable(f"{missing} not built and OPTISERVE_CLUSTER_BUILD=0")
        return binaries
    return ensure_binaries(names)

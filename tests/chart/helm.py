"""Running the pinned helm binary on the chart, and reading what it renders.

helm comes from hack/cluster/build.sh (cached under ~/.cache/optiserve/bin/helm-<version>/);
tests that need it skip with the reason when it is not built.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from optiserve_testing.binaries import Binaries, cache_root, read_versions

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "optiserve"
RELEASE = "optiserve"
NAMESPACE = "optiserve-system"

Manifest = dict[str, Any]
# helm built from source without its release ldflags assumes Kubernetes v1.20; render for the
# version the local control plane runs instead.
KUBE_VERSION = f"--kube-version={read_versions()['KUBERNETES_VERSION']}"


class HelmUnavailable(RuntimeError):
    """No helm binary: neither the pinned build nor one on PATH."""


class HelmFailed(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


def helm_binary() -> Path:
    """The pinned helm (hack/cluster/versions.env), else one on PATH."""
    pinned = Binaries(cache_root(), read_versions()).path("helm")
    if os.access(pinned, os.X_OK):
        return pinned
    found = shutil.which("helm")
    if found is None:
        raise HelmUnavailable(f"helm is not built ({pinned}): run hack/cluster/build.sh helm")
    return Path(found)


def run_helm(*args: str, kubeconfig: Path | None = None, timeout_s: float = 120) -> str:
    env = {
        **os.environ,
        # Keep helm's cache, config and data out of the user's home directory.
        "HELM_CACHE_HOME": str(Path.home() / ".cache" / "optiserve" / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(Path.home() / ".cache" / "optiserve" / "helm" / "config"),
        "HELM_DATA_HOME": str(Path.home() / ".cache" / "optiserve" / "helm" / "data"),
    }
    argv = [str(helm_binary()), *args]
    if kubeconfig is not None:
        argv.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        raise HelmFailed(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result.stdout


def set_flags(values: Mapping[str, Any]) -> list[str]:
    """``--set-json key=value`` flags: types survive (numbers, lists, booleans)."""
    import json

    return [f"--set-json={key}={json.dumps(value)}" for key, value in values.items()]


def template_text(
    values: Mapping[str, Any] | None = None,
    *,
    include_crds: bool = False,
    namespace: str = NAMESPACE,
    extra: Sequence[str] = (),
) -> str:
    args = ["template", RELEASE, str(CHART), f"--namespace={namespace}", KUBE_VERSION, *extra]
    if include_crds:
        args.append("--include-crds")
    return run_helm(*args, *set_flags(values or {}))


def template(
    values: Mapping[str, Any] | None = None, *, include_crds: bool = False
) -> list[Manifest]:
    """The chart rendered with ``values`` (dotted keys), as objects."""
    return parse_documents(template_text(values, include_crds=include_crds))


def parse_documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(objects: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj.get("kind") == kind]


def one(objects: Iterable[Manifest], kind: str) -> Manifest:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]

"""KEDA's own ScaledObject CRD at a pinned version, fetched through the Go module proxy.

KEDA publishes its CRDs inside its Go module (config/crd/bases/), so ``go mod download``
(cached in the Go module cache, about 3 MB) gives the exact schema the cluster would install,
without vendoring it here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from optiserve_testing.binaries import go_command

KEDA_MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.21.0"
SCALED_OBJECT_CRD = "config/crd/bases/keda.sh_scaledobjects.yaml"


class KedaCrdUnavailable(RuntimeError):
    """No Go toolchain, or the module could not be downloaded (offline, empty cache)."""


def keda_crd() -> dict[str, Any]:
    go = go_command()
    if go is None:
        raise KedaCrdUnavailable("no Go toolchain to download KEDA's CRD with")
    result = subprocess.run(
        [str(go), "mod", "download", "-json", f"{KEDA_MODULE}@{KEDA_VERSION}"],
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    info = json.loads(result.stdout) if result.stdout.strip() else {}
    if result.returncode != 0 or "Dir" not in info:
        raise KedaCrdUnavailable(
            f"go mod download {KEDA_MODULE}@{KEDA_VERSION} failed: "
            f"{info.get('Error') or result.stderr.strip()}"
        )
    crd: dict[str, Any] = yaml.safe_load((Path(info["Dir"]) / SCALED_OBJECT_CRD).read_text())
    return crd


def served_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The openAPIV3Schema of ``version``."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{crd['metadata']['name']} serves no version {version}")

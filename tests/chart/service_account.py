"""A kubeconfig that authenticates as a ServiceAccount, through the TokenRequest API.

For tests that must act with exactly the chart's permissions (``kubectl auth can-i``, or the
operator run end to end as the chart's ServiceAccount):

    path = service_account_kubeconfig(cluster, "optiserve-system", "optiserve", tmp_path)
    cluster.kubectl("auth", "can-i", "list", "secrets", kubeconfig=path)

The token is short-lived (``kubectl create token``, default 1h) and bound to nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import yaml


class KubectlRunner(Protocol):
    """What is needed of optiserve_testing.cluster.LocalCluster."""

    kubeconfig: Path

    def kubectl(self, *args: str, check: bool = False) -> Any: ...


def service_account_kubeconfig(
    cluster: KubectlRunner,
    namespace: str,
    name: str,
    directory: Path,
    *,
    duration: str = "1h",
) -> Path:
    """Write ``<directory>/<namespace>-<name>.kubeconfig`` for ServiceAccount ``name``."""
    token = cluster.kubectl(
        "create", "token", name, f"--namespace={namespace}", f"--duration={duration}", check=True
    ).stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": server["cluster"]}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "local", "context": {"cluster": "local", "user": user, "namespace": namespace}}
        ],
        "current-context": "local",
    }
    path = directory / f"{namespace}-{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path

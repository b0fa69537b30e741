"""The operator as a user of its own (``optiserve-operator``), and the API server's audit log of
that user's requests: what the fleet tests (tests/e2e/scale.py) count the operator's writes and
requests from, independently of the operator's own bookkeeping (kopf's requests included).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from optiserve_testing import pki
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.cluster_spec import render_kubeconfig

OPERATOR_USER = "optiserve-operator"
MUTATING_VERBS = ("create", "update", "patch", "delete", "deletecollection")
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # Every request of the operator (reads too: the benchmark counts requests per model);
        # the long-running watches are left out, they are streams, not requests.
        {"level": "None", "users": [OPERATOR_USER], "verbs": ["watch"]},
        {"level": "Metadata", "users": [OPERATOR_USER]},
        {"level": "None"},
    ],
}


def operator_kubeconfig(cluster: LocalCluster) -> Path:
    """Credentials of the operator's own user, bound to cluster-admin (what is measured is
    load, not permissions). Not in system:masters, whose requests API Priority and Fairness
    exempts: the operator's are classified like any other client's."""
    pair = pki.make_certificate(
        cluster.certificate_authority(), cluster.state_dir / "pki", "operator", OPERATOR_USER
    )
    cluster.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "optiserve-operator-admin"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
                ],
            }
        ]
    )
    path = cluster.state_dir / "operator.kubeconfig"
    path.write_text(render_kubeconfig(cluster.server, cluster.pki_dir / "ca.crt", "op", pair))
    return path


class AuditLog:
    """The operator's requests, as the API server recorded them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def writes_since(self, offset: int) -> Counter[str]:
        """``verb resource`` -> count of the operator's completed mutating requests."""
        return Counter(
            {k: n for k, n in self.requests_since(offset).items() if k.split()[0] in MUTATING_VERBS}
        )

    def requests_since(self, offset: int) -> Counter[str]:
        """``verb resource`` -> count of all the operator's completed requests (watches aside)."""
        found: Counter[str] = Counter()
        for entry in self.entries_since(offset):
            ref = entry.get("objectRef") or {}
            resource = ref.get("resource", "?")
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            found[f"{entry.get('verb')} {resource}"] += 1
        return found

    def entries_since(self, offset: int) -> list[dict[str, Any]]:
        """The operator's completed requests (watches aside) since ``offset``, as recorded."""
        found: list[dict[str, Any]] = []
        if not self.path.exists():
            return found
        with self.path.open("rb") as log:
            log.seek(offset)
            for line in log:
                entry = json.loads(line)
                if entry.get("stage") != "ResponseComplete":
                    continue
                if entry.get("user", {}).get("username") == OPERATOR_USER:
                    found.append(entry)
        return found

"""storage.retention end to end: the real operator, API server and optimizer (pod runner).

Three recipes of one model with ``keepSuperseded: 0``: each new Job is told the served
digest, so each artifact survives the next Job (it is still served while that Job runs) and
is removed by the one after; the spec ConfigMaps of the superseded Jobs are deleted by
the operator; the served artifact records the hash of the source it was optimized from.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.waiting import wait_until
from tests.e2e.conftest import OperatorProcess
from tests.e2e.objects import get, items, tiny, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(900)]


def recipe(max_drop: float) -> dict[str, Any]:
    model = tiny("kappa")
    model["spec"]["optimization"]["accuracy"]["maxDrop"] = max_drop
    model["spec"]["storage"] = {"pvc": "model-store", "retention": {"keepSuperseded": 0}}
    return model


def test_superseded_artifacts_and_spec_config_maps_are_removed(
    cluster: LocalCluster, operator: OperatorProcess, e2e_namespace: str
) -> None:
    ns = e2e_namespace
    own = cluster.pvc_root / ns / "model-store" / "optiserve" / ns / "kappa"
    digests: list[str] = []
    for max_drop in (0.05, 0.04, 0.03):
        cluster.apply([recipe(max_drop)], namespace=ns)

        def new_digest(seen: tuple[str, ...] = tuple(digests)) -> bool:
            status = (get(cluster, ns, "om", "kappa") or {}).get("status") or {}
            return status.get("recipeDigest") not in (None, *seen)

        wait_until("a new recipe digest", new_digest, timeout_s=60)
        digests.append(wait_ready(cluster, operator, ns, "kappa")["status"]["recipeDigest"])
        # Each Job keeps the artifact served while it runs (the previous one) and its own.
        assert sorted(p.name for p in own.iterdir()) == sorted(digests[-2:])
    third = digests[-1]

    def only_the_current_config_map() -> bool:
        names = [cm["metadata"]["name"] for cm in items(cluster, ns, "configmaps", "kappa")]
        return names == [f"kappa-opt-{third[:10]}"]

    wait_until("the superseded spec ConfigMaps deleted", only_the_current_config_map, timeout_s=60)
    artifact = get(cluster, ns, "om", "kappa")["status"]["artifact"]
    source = cluster.pvc_root / ns / "models" / "tiny.onnx"
    assert artifact["sourceSha256"] == hashlib.sha256(source.read_bytes()).hexdigest()

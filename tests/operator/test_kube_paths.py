"""REST paths the API wrapper builds (the calls themselves run in tests/e2e)."""

from __future__ import annotations

from optiserve_operator.kube import owned_by
from optiserve_operator.kube_transport import resource_path


def test_core_and_group_paths() -> None:
    assert resource_path("v1", "Pod", "ns") == "/api/v1/namespaces/ns/pods"
    assert resource_path("batch/v1", "Job", "ns", "j") == "/apis/batch/v1/namespaces/ns/jobs/j"
    assert resource_path("optiserve.io/v1alpha1", "OptimizedModel", "ns", "m", "status") == (
        "/apis/optiserve.io/v1alpha1/namespaces/ns/optimizedmodels/m/status"
    )


def test_owned_by_matches_the_owner_uid_only() -> None:
    child = {"metadata": {"ownerReferences": [{"uid": "u1"}]}}
    assert owned_by(child, "u1") and not owned_by(child, "u2") and not owned_by({}, "u1")

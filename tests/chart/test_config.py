"""config/ (kubectl apply -k) is the chart's default rendering, and kustomize builds it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from optiserve_testing.binaries import Binaries, BinariesUnavailable, cache_root, read_versions
from tests.chart.config_manifests import CONFIG, CRD_SOURCE, committed_objects, expected_files
from tests.chart.helm import NAMESPACE, parse_documents


def kubectl() -> Path:
    try:
        return Binaries(cache_root(), read_versions()).kubectl()
    except BinariesUnavailable as err:
        pytest.skip(str(err))


def test_config_carries_the_generated_crd() -> None:
    assert (CONFIG / "crd" / CRD_SOURCE.name).read_text() == CRD_SOURCE.read_text(), (
        "run `python -m tests.chart.config_manifests` (or `make manifests`)"
    )


@pytest.mark.usefixtures("helm")
def test_config_is_the_chart_rendered_with_defaults() -> None:
    for relative, content in expected_files().items():
        committed = CONFIG / relative
        assert committed.exists() and committed.read_text() == content, (
            f"config/{relative} drifted from charts/optiserve: "
            "run `python -m tests.chart.config_manifests`"
        )


def test_config_operator_runs_standalone_in_its_namespace() -> None:
    objects = committed_objects()
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert "--standalone" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_kustomize_builds_config() -> None:
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(CONFIG)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    objects = parse_documents(result.stdout)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == sorted(
        {
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "PodDisruptionBudget",
            "Service",
            "Deployment",
            "ConfigMap",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        }
    )
    namespace = next(o for o in objects if o["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

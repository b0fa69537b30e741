"""The chart's ValidatingAdmissionPolicy on the real kube-apiserver, as a user who may create
OptimizedModels and nothing else: every case of tests/unit/policy_cases.py (which the operator's
Python rules pass in tests/unit/test_policy.py) gets the same verdict from the API server, and a
refusal names the same field. A policy ConfigMap that lost a key refuses everything."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from optiserve_testing.cluster import LocalCluster, wait_established
from optiserve_testing.waiting import wait_until
from tests.chart.helm import CHART, KUBE_VERSION, parse_documents, run_helm, set_flags
from tests.chart.service_account import service_account_kubeconfig
from tests.unit.policy_cases import ALLOWED, FORBIDDEN, POLICY_DATA, Case, Spec, model

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("helm")]

CRD = CHART / "crds" / "optiserve.io_optimizedmodels.yaml"
USER = "modeler"
# policy_cases.POLICY_DATA as chart values (the ConfigMap the chart renders from them must be
# the same data: checked below).
POLICY_VALUES = {
    "policy.allowedImagePrefixes": ["ghcr.io/optiserve/optimizer", "nvcr.io/nvidia/tritonserver"],
    "policy.maxGpus": 1,
    "policy.maxCpu": "16",
    "policy.maxMemory": "64Gi",
    "policy.allowedNodeSelectors": ["nvidia.com/gpu.product=*", "pool=ml"],
    "policy.allowedTolerations": ["dedicated:NoSchedule"],
    "policy.allowedSourceClaims": ["models", "data"],
    "policy.allowedStorageClaims": ["model-store"],
}


@dataclass(frozen=True)
class Installed:
    namespace: str
    release: str
    policy_config_map: str
    user: Path  # kubeconfig of the restricted user


def _restricted_user(cluster: LocalCluster, namespace: str, directory: Path) -> Path:
    """A ServiceAccount that may create and read OptimizedModels in ``namespace``, nothing else."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": USER},
        "rules": [
            {
                "apiGroups": ["optiserve.io"],
                "resources": ["optimizedmodels"],
                "verbs": ["create", "get"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": USER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": USER},
        "subjects": [{"kind": "ServiceAccount", "name": USER, "namespace": namespace}],
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": USER}}
    cluster.apply([account, role, binding], namespace=namespace)
    return service_account_kubeconfig(cluster, namespace, USER, directory)


def _create(cluster: LocalCluster, user: Path, namespace: str, name: str, spec: Spec) -> str:
    """Create the OptimizedModel as ``user``; "" when accepted, else the API server's refusal."""
    result = cluster.kubectl(
        "create",
        f"--namespace={namespace}",
        "-f",
        "-",
        kubeconfig=user,
        input=json.dumps(model(name, spec)),
    )
    return "" if result.returncode == 0 else result.stderr


@pytest.fixture(scope="module")
def installed(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    applied = cluster.kubectl("apply", "--server-side", "-f", str(CRD))
    assert applied.returncode == 0, applied.stderr
    wait_established(cluster, "optimizedmodels.optiserve.io", timeout_s=120)
    namespace = release = f"vap-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace, check=True)
    cluster.wait_for_default_service_account(namespace)
    rendered = run_helm(
        "template",
        release,
        str(CHART),
        f"--namespace={namespace}",
        KUBE_VERSION,
        "--show-only=templates/admission-policy.yaml",
        *set_flags({"watchNamespaces": [namespace], **POLICY_VALUES}),
    )
    objects = parse_documents(rendered)
    assert {o["kind"] for o in objects} == {
        "ConfigMap",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert {k: v.replace(" ", "") for k, v in config_map["data"].items()} == {
        k: v.replace(" ", "") for k, v in POLICY_DATA.items()
    }
    try:
        applied = cluster.kubectl("apply", "-f", "-", input=rendered)
        assert applied.returncode == 0, applied.stderr  # the API server compiled every rule
        user = _restricted_user(cluster, namespace, tmp_path_factory.mktemp("modeler"))
        installed = Installed(namespace, release, config_map["metadata"]["name"], user)
        # The API server compiles a new policy and binding asynchronously: wait until a
        # forbidden spec is refused (dry run: nothing is stored while waiting).
        forbidden = FORBIDDEN[0]

        def refused() -> bool:
            result = cluster.kubectl(
                "create",
                "--dry-run=server",
                f"--namespace={namespace}",
                "-f",
                "-",
                kubeconfig=user,
                input=json.dumps(model("probe", forbidden.spec())),
            )
            return result.returncode != 0 and "denied request" in result.stderr

        wait_until("the admission policy to take effect", refused, timeout_s=60)
        yield installed
    finally:
        cluster.kubectl(
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "--ignore-not-found",
        )
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def _can_i(cluster: LocalCluster, user: Path, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, kubeconfig=user)
    return result.stdout.strip() == "yes"


def test_the_user_may_create_optimized_models_and_nothing_else(
    cluster: LocalCluster, installed: Installed
) -> None:
    ns = f"--namespace={installed.namespace}"
    assert _can_i(cluster, installed.user, "create", "optimizedmodels.optiserve.io", ns)
    for resource in ("pods", "jobs.batch", "deployments.apps", "persistentvolumeclaims"):
        assert not _can_i(cluster, installed.user, "create", resource, ns), resource
    assert not _can_i(cluster, installed.user, "update", "configmaps", ns)


@pytest.mark.parametrize("case", ALLOWED, ids=lambda c: c.name)
def test_allowed_specs_are_accepted(
    cluster: LocalCluster, installed: Installed, case: Case
) -> None:
    refusal = _create(cluster, installed.user, installed.namespace, case.name, case.spec())
    assert refusal == ""


@pytest.mark.parametrize("case", FORBIDDEN, ids=lambda c: c.name)
def test_forbidden_specs_are_refused_naming_the_field(
    cluster: LocalCluster, installed: Installed, case: Case
) -> None:
    refusal = _create(cluster, installed.user, installed.namespace, case.name, case.spec())
    assert refusal, f"{case.name} was accepted"
    # The policy's refusal; where the CRD's own schema already refuses the value (it is checked
    # before validating admission), that refusal names the field just as well.
    by_policy = f"ValidatingAdmissionPolicy '{installed.release}-optiserve-policy'" in refusal
    assert by_policy or "Invalid value" in refusal, refusal
    assert case.field is not None and case.field in refusal, refusal
    stored = cluster.kubectl("get", "om", case.name, f"--namespace={installed.namespace}")
    assert stored.returncode != 0  # nothing was stored


def test_a_spec_unchanged_since_admission_may_still_be_labelled(
    cluster: LocalCluster, installed: Installed
) -> None:
    """Metadata-only updates (the operator's finalizer, a label, a deletion) are not judged."""
    assert (
        _create(cluster, installed.user, installed.namespace, "labelled", ALLOWED[0].spec()) == ""
    )
    result = cluster.kubectl(
        "label", "om", "labelled", "team=a", f"--namespace={installed.namespace}"
    )
    assert result.returncode == 0, result.stderr


def test_a_policy_that_lost_a_key_refuses_everything(
    cluster: LocalCluster, installed: Installed
) -> None:
    ns = installed.namespace
    patch = [{"op": "remove", "path": "/data/maxGpus"}]
    cluster.kubectl(
        "patch",
        "configmap",
        installed.policy_config_map,
        f"--namespace={ns}",
        "--type=json",
        f"-p={json.dumps(patch)}",
        check=True,
    )
    try:

        def refused() -> bool:
            return bool(_create(cluster, installed.user, ns, "after-damage", ALLOWED[0].spec()))

        wait_until("the damaged policy to refuse a plain spec", refused, timeout_s=30)
    finally:
        restore = {"data": {"maxGpus": POLICY_DATA["maxGpus"]}}
        cluster.kubectl(
            "patch",
            "configmap",
            installed.policy_config_map,
            f"--namespace={ns}",
            f"-p={yaml.safe_dump(restore)}",
            check=True,
        )

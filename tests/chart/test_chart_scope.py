"""What the chart lets the operator touch, and what it lets a spec ask for, by default.

The default scope is the namespaces the chart is given (the release's own when none), with a
Role and RoleBinding in each; cluster-wide is an explicit value; kube-system and the other
system namespaces need one more explicit value. The admission policy ships on, bound to the
same namespaces, with the operator reading the same ConfigMap."""

from __future__ import annotations

from typing import Any

import pytest

from optiserve.api.serving import DEFAULT_TRITON_IMAGE
from optiserve.policy import image_allowed, parse_policy
from tests.chart.helm import NAMESPACE, HelmFailed, Manifest, of_kind, one, template

pytestmark = pytest.mark.usefixtures("helm")

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


def _args(objects: list[Manifest]) -> list[str]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args: list[str] = container["args"]
    return args


def _namespace_flags(objects: list[Manifest]) -> list[str]:
    return [a for a in _args(objects) if a.startswith("--namespace")]


def _work_roles(objects: list[Manifest]) -> list[Manifest]:
    """Roles that may create Jobs (the operator's work), cluster-wide or namespaced."""
    return [
        role
        for role in of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
        if any("jobs" in rule.get("resources", []) for rule in role.get("rules") or [])
    ]


def _pod_listers(objects: list[Manifest]) -> list[Manifest]:
    return [
        role
        for role in _work_roles(objects)
        if any("pods" in rule.get("resources", []) for rule in role["rules"])
    ]


def test_by_default_the_operator_works_in_its_own_namespace_only() -> None:
    objects = template()
    (role,) = _work_roles(objects)
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == NAMESPACE
    (binding,) = [b for b in of_kind(objects, "RoleBinding") if b["roleRef"]["name"] == "optiserve"]
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # The only other RoleBinding: the leader-election Lease's, in the same namespace.
    assert {b["metadata"]["namespace"] for b in of_kind(objects, "RoleBinding")} == {NAMESPACE}
    assert _namespace_flags(objects) == [f"--namespace={NAMESPACE}"]
    # Listing pods: only where it works, never across the cluster.
    assert [r["kind"] for r in _pod_listers(objects)] == ["Role"]
    assert not [b for b in of_kind(objects, "ClusterRoleBinding") if "framework" not in str(b)]


def test_given_namespaces_get_a_role_each_and_nothing_elsewhere() -> None:
    objects = template({"watchNamespaces": ["ml", "research"]})
    assert sorted(r["metadata"]["namespace"] for r in _work_roles(objects)) == ["ml", "research"]
    assert {r["kind"] for r in _work_roles(objects)} == {"Role"}
    assert _namespace_flags(objects) == ["--namespace=ml", "--namespace=research"]
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    (expression,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert expression == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["ml", "research"],
    }


def test_cluster_wide_is_an_explicit_choice() -> None:
    objects = template({"clusterWide": True})
    (role,) = _work_roles(objects)
    assert role["kind"] == "ClusterRole"
    # Nothing namespaced but the leader-election Lease's Role, in the release namespace.
    assert [
        (r["metadata"]["name"], r["metadata"]["namespace"]) for r in of_kind(objects, "Role")
    ] == [("optiserve-leader-election", NAMESPACE)]
    assert _namespace_flags(objects) == []
    # The policy then guards every namespace.
    assert "matchResources" not in one(objects, "ValidatingAdmissionPolicyBinding")["spec"]
    with pytest.raises(HelmFailed, match="leave watchNamespaces empty"):
        template({"clusterWide": True, "watchNamespaces": ["ml"]})


@pytest.mark.parametrize("system", SYSTEM_NAMESPACES)
def test_system_namespaces_need_their_own_explicit_value(system: str) -> None:
    with pytest.raises(HelmFailed, match=f"{system} is a system namespace"):
        template({"watchNamespaces": ["ml", system]})
    objects = template({"watchNamespaces": [system], "allowSystemNamespaces": True})
    assert [r["metadata"]["namespace"] for r in _work_roles(objects)] == [system]


def test_the_policy_config_map_is_what_the_operator_and_the_api_server_read() -> None:
    objects = template()
    config_map = one(objects, "ConfigMap")
    policy = parse_policy(config_map["data"])  # every key, nothing unknown, numbers parse
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    vap = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["paramRef"] == {
        "name": config_map["metadata"]["name"],
        "namespace": NAMESPACE,
        "parameterNotFoundAction": "Deny",
    }
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert vap["spec"]["failurePolicy"] == "Fail"
    assert vap["spec"]["paramKind"] == {"apiVersion": "v1", "kind": "ConfigMap"}
    # A changed policy restarts the operator, which reads it at start.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/policy"]) == 64
    changed = one(template({"policy.maxGpus": 2}), "Deployment")["spec"]["template"]["metadata"]
    assert changed["annotations"]["checksum/policy"] != annotations["checksum/policy"]
    # Defaults: the chart's own images only, no tolerations, one GPU.
    from optiserve_operator.settings import DEFAULT_OPTIMIZER_IMAGE

    for image in (DEFAULT_OPTIMIZER_IMAGE, DEFAULT_TRITON_IMAGE):
        assert image_allowed(image, policy.allowed_image_prefixes), image
    assert not image_allowed("docker.io/library/busybox:1", policy.allowed_image_prefixes)
    assert policy.allowed_tolerations == ()
    assert policy.max_gpus == 1


def test_the_policy_can_be_left_out() -> None:
    objects = template({"policy.enabled": False})
    kinds = {o["kind"] for o in objects}
    assert not kinds & {
        "ConfigMap",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    assert not [a for a in _args(objects) if a.startswith("--policy-dir")]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"policy.maxGpus": -1}, "maxGpus"),
        ({"policy.allowedTolerations": ["dedicated:Sometimes"]}, "allowedTolerations"),
        ({"policy.allowedNodeSelectors": ["pool"]}, "allowedNodeSelectors"),
        ({"policy.allowedImagePrefixes": ["a,b"]}, "allowedImagePrefixes"),
        ({"policy.maxGPUs": 4}, "maxGPUs"),
        ({"policy.maxMemory": "lots"}, "maxMemory"),
        ({"clusterWide": "yes"}, "clusterWide"),
    ],
)
def test_the_schema_refuses_bad_policy_values(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(HelmFailed, match=complaint):
        template(values)

"""The Triton pods' NetworkPolicy: a golden file plus the rules that must hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from optiserve.api.network import NetworkPeer, NetworkPolicySpec
from optiserve.render.deployment import render_network_policy, selector_labels
from optiserve.render.kubernetes import GRPC_PORT, HTTP_PORT, METRICS_PORT, Owner

from .golden_files import check_golden_manifest

GOLDEN = Path(__file__).parent / "golden"
OWNER = Owner(name="minilm", namespace="ml", uid="0b8e3a52-1111-2222-3333-444455556666")
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}


def policy(**fields: Any) -> NetworkPolicySpec:
    return NetworkPolicySpec.model_validate({"enabled": True, **fields})


def ports(rule: dict[str, Any]) -> list[int]:
    return sorted(p["port"] for p in rule["ports"])


def test_network_policy_matches_golden() -> None:
    spec = policy(
        ingressFrom=[
            {"namespaceSelector": {"kubernetes.io/metadata.name": "gateway"}},
            {"podSelector": {"app": "web"}},
            {"namespaceSelector": {"team": "search"}, "podSelector": {"role": "client"}},
        ],
        metricsFrom=[{"namespaceSelector": MONITORING}],
    )
    manifest = render_network_policy(OWNER, spec)
    assert manifest is not None
    check_golden_manifest(GOLDEN / "network-policy.yaml", manifest)


def test_disabled_renders_nothing() -> None:
    assert render_network_policy(OWNER, NetworkPolicySpec()) is None
    named = NetworkPolicySpec(enabled=False, metrics_from=[NetworkPeer(pod_selector={})])
    assert render_network_policy(OWNER, named) is None


def test_inference_and_metrics_ports_each_only_from_their_peers() -> None:
    manifest = render_network_policy(
        OWNER,
        policy(
            ingressFrom=[{"podSelector": {"app": "web"}}],
            metricsFrom=[{"namespaceSelector": MONITORING}],
        ),
    )
    assert manifest is not None
    spec = manifest["spec"]
    assert manifest["metadata"]["namespace"] == "ml"
    assert spec["podSelector"] == {"matchLabels": selector_labels("minilm")}
    assert spec["policyTypes"] == ["Ingress", "Egress"] and "egress" not in spec  # none allowed
    inference, metrics = spec["ingress"]
    assert ports(inference) == [HTTP_PORT, GRPC_PORT] == [8000, 8001]
    assert inference["from"] == [{"podSelector": {"matchLabels": {"app": "web"}}}]
    assert ports(metrics) == [METRICS_PORT] == [8002]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": MONITORING}}]


def test_no_peer_named_means_the_models_own_namespace_only() -> None:
    manifest = render_network_policy(OWNER, policy())
    assert manifest is not None
    for rule in manifest["spec"]["ingress"]:
        # A bare podSelector {} is every pod of the policy's namespace, never other namespaces.
        assert rule["from"] == [{"podSelector": {}}]


def test_an_empty_selector_is_all_and_kept_apart_from_an_unset_one() -> None:
    manifest = render_network_policy(OWNER, policy(ingressFrom=[{"namespaceSelector": {}}]))
    assert manifest is not None
    assert manifest["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {}}]


@pytest.mark.parametrize(
    ("peer", "problem"),
    [
        ({}, "namespaceSelector, podSelector or both"),
        ({"podSelector": {"bad key!": "x"}}, "label keys"),
        ({"namespaceSelector": {"team": "bad value"}}, "label keys"),
    ],
)
def test_a_peer_that_selects_nothing_sensible_is_refused(
    peer: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        policy(ingressFrom=[peer])

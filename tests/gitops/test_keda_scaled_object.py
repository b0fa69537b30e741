"""The rendered ScaledObject against KEDA's real CRD schema (pinned in keda_crd.py).

Checked the way the API server admits custom resources (tests/unit/apiserver_model.py:
structural schema with unknown fields refused, then the CRD's CEL rules), so a misspelt or
misplaced field fails here instead of on a cluster with KEDA.
"""

from __future__ import annotations

from typing import Any

import pytest

from optiserve.api import AutoscalingSpec
from optiserve.render.autoscaling import KEDA_API_VERSION, render_scaled_object
from optiserve.render.kubernetes import Owner
from tests.gitops.keda_crd import KedaCrdUnavailable, keda_crd, served_schema
from tests.unit.apiserver_model import admit

OWNER = Owner(name="minilm", namespace="ml", uid="0b8e3a52-1111-2222-3333-444455556666")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    try:
        crd = keda_crd()
    except KedaCrdUnavailable as err:
        pytest.skip(str(err))
    group, version = KEDA_API_VERSION.split("/")
    assert crd["spec"]["group"] == group
    assert crd["spec"]["names"]["kind"] == "ScaledObject"
    return served_schema(crd, version)


@pytest.mark.parametrize("metric", ["queueTime", "pendingRequests", "gpuUtilization"])
@pytest.mark.parametrize("min_replicas", [0, 2])
def test_keda_admits_the_scaled_object(
    schema: dict[str, Any], metric: str, min_replicas: int
) -> None:
    spec = AutoscalingSpec.model_validate(
        {
            "provider": "keda",
            "metric": metric,
            "minReplicas": min_replicas,
            "maxReplicas": 5,
            "target": "40",
            "scaleUpStabilizationSeconds": 30,
        }
    )
    assert admit(schema, render_scaled_object(OWNER, spec)) == []


def test_the_check_catches_a_wrong_field(schema: dict[str, Any]) -> None:
    """The schema check has teeth: a field KEDA does not know is refused."""
    obj = render_scaled_object(OWNER, AutoscalingSpec.model_validate({"provider": "keda"}))
    obj["spec"]["cooldownPeriodSeconds"] = obj["spec"].pop("cooldownPeriod")
    assert any("cooldownPeriodSeconds" in problem for problem in admit(schema, obj))

"""spec.rollout: the canary fields parse, refuse what cannot run, and default to rolling."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from optiserve.api.rollout import RolloutSpec


def test_default_is_the_rolling_update() -> None:
    spec = RolloutSpec()
    assert spec.strategy == "rolling"
    assert spec.steps == []
    assert spec.to_wire()["maxSurgeGPUs"] == 0


def test_canary_parses_from_the_wire() -> None:
    spec = RolloutSpec.model_validate(
        {
            "strategy": "canary",
            "steps": [{"weight": 10, "pauseSeconds": 30}, {"weight": 50}],
            "analysis": {"maxErrorRate": 0.05, "minRequests": 5},
            "maxSurgeGPUs": 2,
        }
    )
    assert [s.weight for s in spec.steps] == [10, 50]
    assert spec.steps[1].pause_seconds == 60
    assert spec.analysis.max_error_rate == 0.05
    assert spec.max_surge_gpus == 2


@pytest.mark.parametrize(
    ("wire", "said"),
    [
        ({"strategy": "canary"}, "needs steps"),
        ({"strategy": "canary", "steps": [{"weight": 50}, {"weight": 10}]}, "must rise"),
        ({"strategy": "canary", "steps": [{"weight": 50}, {"weight": 50}]}, "must rise"),
        ({"strategy": "canary", "steps": [{"weight": 100}]}, "less than or equal to 99"),
        ({"strategy": "blue-green"}, "'rolling' or 'canary'"),
        ({"maxSurgeGpus": 1}, "Extra inputs"),
    ],
)
def test_refused(wire: dict[str, object], said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        RolloutSpec.model_validate(wire)

"""The pass registry and each pass's typed settings."""

from __future__ import annotations

import pytest

from optiserve.api import (
    CalibrationSpec,
    OptimizationSpec,
    PruningSpec,
    RecoverySpec,
    SourceSpec,
    TensorRTSpec,
)
from optiserve_optimizer import plan, registry
from optiserve_optimizer.errors import SettingsError
from optiserve_optimizer.settings import PruneSettings, QuantizeSettings, RecoverSettings


def test_every_step_of_the_plan_has_a_pass_of_that_name() -> None:
    assert registry.registered() == sorted(plan.STEP_ORDER)
    for name in plan.STEP_ORDER:
        made = registry.pass_for(name)
        assert made.name == name
        assert made.settings_type.model_config["extra"] == "forbid"


def test_an_unknown_pass_and_a_second_registration_are_refused() -> None:
    with pytest.raises(KeyError, match=r"no pass named 'sharpen'.*registered"):
        registry.pass_for("sharpen")
    with pytest.raises(ValueError, match="'prune' is already registered"):
        registry.register(plan.PRUNE, lambda: type(registry.pass_for(plan.PRUNE)))
    assert registry.pass_for(plan.PRUNE).name == plan.PRUNE  # the first one stays


def test_the_plan_writes_settings_every_pass_accepts() -> None:
    source = SourceSpec(uri="/m.pt", format="torchscript", sha256="a" * 64)
    spec = OptimizationSpec.model_validate(
        {
            "target": {"device": "gpu"},
            "pruning": {"method": "2:4"},
            "recovery": {"method": "distill", "dataset": "/train.npz"},
            "student": {"method": "narrow", "dataset": "/train.npz"},
            "quantization": {
                "precision": "int8",
                "method": "static",
                "calibration": {"uri": "/cal.npz", "method": "entropy"},
            },
            "tensorrt": {"enabled": True, "sparseWeights": True},
            "accuracy": {"dataset": "/eval.npz"},
        }
    )
    seen = set()
    for candidate in plan.build_plan(source, spec).candidates:
        for step in candidate.steps:
            settings_type = registry.pass_for(step.name).settings_type
            settings = settings_type.of(step.params, step.name)
            assert settings.model_dump(by_alias=True, exclude_unset=True) == dict(step.params)
            seen.add(step.name)
    assert seen == set(plan.STEP_ORDER)


def test_unknown_or_invalid_settings_name_the_pass_and_the_field() -> None:
    with pytest.raises(SettingsError, match=r"\[prune\].*sparsty: Extra inputs"):
        PruneSettings.of({"method": "structured", "sparsty": 0.5}, "prune")
    with pytest.raises(SettingsError, match=r"\[quantize\].*precision"):
        QuantizeSettings.of({"precision": "int4"}, "quantize")


def test_defaults_are_the_api_models() -> None:
    assert PruneSettings(method="magnitude").sparsity == PruningSpec().sparsity
    recover = RecoverSettings(dataset="/d.npz")
    assert (recover.method, recover.epochs, recover.learning_rate) == (
        RecoverySpec().method,
        RecoverySpec().epochs,
        RecoverySpec().learning_rate,
    )
    quantize = QuantizeSettings(precision="int8")
    assert quantize.samples == CalibrationSpec(uri="/c.npz").samples
    assert quantize.calibrate == CalibrationSpec(uri="/c.npz").method
    from optiserve_optimizer.settings import TensorRTSettings

    assert TensorRTSettings().workspace_mib == TensorRTSpec().workspace_mib

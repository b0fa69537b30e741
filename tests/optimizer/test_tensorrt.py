"""TensorRT engine build: needs the tensorrt package and a CUDA device."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve_optimizer.artifact import ModelArtifact, PassContext
from optiserve_optimizer.progress import Progress
from tests.optimizer.conftest import make_mlp, make_npz

pytestmark = pytest.mark.gpu


def _skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device visible"
    return None


@pytest.fixture(autouse=True)
def _needs_tensorrt() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_with_a_derived_profile_and_reuses_the_timing_cache(
    tmp_path: Path, precision: str
) -> None:
    from optiserve_optimizer.passes.shapes import Shapes
    from optiserve_optimizer.passes.tensorrt_build import TensorRTBuild

    model = make_mlp(tmp_path / "mlp.onnx")
    eval_npz = make_npz(tmp_path / "eval.npz", 64)
    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(eval_npz)}})
    ctx = PassContext(SourceSpec(uri=str(model)), spec, tmp_path / "work", Progress())
    artifact = Shapes().run(ModelArtifact(onnx=model), {}, ctx).artifact
    first = TensorRTBuild().run(artifact, {"precision": precision}, ctx)
    assert first.artifact.plan is not None and first.artifact.plan.stat().st_size > 0
    assert first.metrics["computeCapability"]
    ctx.step_label = "again"
    second = TensorRTBuild().run(artifact, {"precision": precision}, ctx)
    assert second.metrics["timingCacheReused"] is True
    import numpy as np

    from optiserve_optimizer.passes.tensorrt_build import tensorrt_runner

    x = np.load(eval_npz)["input"][:4]
    out = tensorrt_runner(first.artifact.plan)({"input": x})[0]
    assert out.shape == (4, 10)

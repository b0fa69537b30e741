"""The pure parts: plan and recipe digest (no torch, no onnxruntime)."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from typing import Any

import pytest

from optiserve.api import OptimizationSpec, ServingSpec, SourceSpec
from optiserve.digest import recipe_digest, spec_recipe_digest
from optiserve_optimizer.plan import GRAPH_OPT, QUANTIZE, SHAPES, TENSORRT, build_plan

SERVING = ServingSpec()


def optimization(**fields: Any) -> OptimizationSpec:
    return OptimizationSpec.model_validate({"accuracy": {"dataset": "/d/eval.npz"}, **fields})


TS = SourceSpec(uri="/m/model.pt", format="torchscript")
ONNX = SourceSpec(uri="pvc://models/model.onnx", format="onnx")
STATIC = {"precision": "int8", "method": "static", "calibration": {"uri": "/d/cal.npz"}}


def test_plain_spec_gives_only_the_fp32_baseline() -> None:
    plan = build_plan(ONNX, optimization())
    assert plan.names() == ["fp32"]
    assert [s.name for s in plan.candidates[0].steps] == ["load_export", GRAPH_OPT]


def test_pruning_and_quantization_give_every_combination() -> None:
    plan = build_plan(TS, optimization(pruning={"method": "structured"}, quantization=STATIC))
    assert plan.names() == [
        "fp32",
        "int8-static",
        "pruned-structured",
        "pruned-structured+int8-static",
    ]
    combined = plan.candidates[-1]
    assert [s.name for s in combined.steps] == [
        "load_export",
        "prune",
        "recover",
        GRAPH_OPT,
        QUANTIZE,
    ]
    # quantizers need standard ops, so the graph is only lightly optimized before them
    assert combined.steps[3].params["level"] == "basic"
    assert plan.candidates[2].steps[-1].params["level"] == "extended"


def test_onnx_sources_are_pruned_without_recovery_and_the_plan_says_so() -> None:
    plan = build_plan(ONNX, optimization(target={"device": "gpu"}, pruning={"method": "2:4"}))
    assert plan.names() == ["fp32", "pruned-2:4"]
    assert "recover" not in [s.name for s in plan.candidates[1].steps]
    assert any("recovery skipped" in note for note in plan.notes)


def test_recovery_defaults_to_calibration_data() -> None:
    plan = build_plan(TS, optimization(pruning={"method": "magnitude"}, quantization=STATIC))
    recover = next(s for s in plan.candidates[2].steps if s.name == "recover")
    assert recover.params["dataset"] == "/d/cal.npz"
    assert recover.params["keepZeros"] is True


def test_tensorrt_candidate_derives_shapes_when_no_profiles_given() -> None:
    spec = optimization(
        target={"device": "gpu"}, tensorrt={"enabled": True}, quantization={"precision": "fp16"}
    )
    plan = build_plan(ONNX, spec)
    trt = plan.candidates[-1]
    assert trt.name == "trt-fp16" and trt.engine == "tensorrt_plan"
    assert [s.name for s in trt.steps][-3:] == [QUANTIZE, SHAPES, TENSORRT]
    assert trt.steps[-3].params == {"precision": "fp16"}  # TensorRT 11: FP16 is the graph's


def test_tensorrt_int8_quantizes_explicitly_first() -> None:
    spec = optimization(target={"device": "gpu"}, tensorrt={"enabled": True}, quantization=STATIC)
    trt = build_plan(ONNX, spec).candidates[-1]
    assert trt.name == "trt-int8"
    assert [s.name for s in trt.steps][-3:] == [QUANTIZE, SHAPES, TENSORRT]
    assert trt.steps[-3].params["symmetric"] is True  # TensorRT's Q/DQ are symmetric only


def test_digest_is_stable_and_order_independent() -> None:
    a = recipe_digest("/m", None, {"x": 1, "y": [1, 2]}, None, version="1.0")
    b = recipe_digest("/m", None, {"y": [1, 2], "x": 1}, None, version="1.0")
    assert a == b and len(a) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"source_uri": "/other"},
        {"source_sha256": "a" * 64},
        {"optimization": {"x": 2}},
        {"gpu_class": "NVIDIA-A100-SXM4-80GB"},
        {"version": "2.0"},
    ],
)
def test_digest_changes_with_every_input(change: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "source_uri": "/m",
        "source_sha256": None,
        "optimization": {"x": 1},
        "gpu_class": None,
        "version": "1.0",
    }
    assert recipe_digest(**base) != recipe_digest(**(base | change))


def test_spec_digest_uses_the_gpu_class_only_for_gpu_targets() -> None:
    cpu = spec_recipe_digest("m", ONNX, optimization(), SERVING, version="1")
    assert cpu == spec_recipe_digest("m", ONNX, optimization(), SERVING, version="1")
    gpu_a = spec_recipe_digest(
        "m", ONNX, optimization(target={"device": "gpu", "gpuProduct": "A"}), SERVING
    )
    gpu_b = spec_recipe_digest(
        "m", ONNX, optimization(target={"device": "gpu", "gpuProduct": "B"}), SERVING
    )
    assert gpu_a != gpu_b


def _assert_runs_clean(code: str) -> None:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and expect exit 0."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": ":".join(sys.path)},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_plan_and_digest_import_without_heavy_libraries() -> None:
    code = (
        "import sys; import optiserve_optimizer.plan, optiserve.digest, "
        "optiserve_optimizer.main; "
        "heavy = {'torch', 'onnxruntime', 'tensorrt', 'onnx'} & set(sys.modules); "
        "print(sorted(heavy)); sys.exit(1 if heavy else 0)"
    )
    _assert_runs_clean(code)


def test_digest_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys; before = set(sys.modules); import optiserve.digest; "
        "new = [sys.modules[m] for m in set(sys.modules) - before]; "
        "bad = sorted(m.__name__ for m in new if 'site-packages' in str(getattr(m, '__file__', "
        "'') or '')); print(bad); sys.exit(1 if bad else 0)"
    )
    _assert_runs_clean(code)


def test_job_settings_do_not_change_the_digest() -> None:
    source = SourceSpec(uri="pvc://models/m.onnx")
    base = {"accuracy": {"dataset": "pvc://models/eval.npz"}}
    slow = OptimizationSpec.model_validate({**base, "job": {"activeDeadlineSeconds": 7200}})
    fast = OptimizationSpec.model_validate(base)
    int8 = OptimizationSpec.model_validate({**base, "quantization": {"precision": "int8"}})
    digest = partial(spec_recipe_digest, "m", source, serving=SERVING)
    assert digest(slow) == digest(fast)
    assert digest(int8) != digest(fast)


def test_the_artifacts_facts_change_the_digest_and_serving_settings_do_not() -> None:
    # Each serving and each optimization field: tests/unit/test_serving_config.py.
    source = SourceSpec(uri="pvc://models/m.onnx")
    opt = OptimizationSpec.model_validate({"accuracy": {"dataset": "pvc://models/eval.npz"}})
    base = spec_recipe_digest("m", source, opt, SERVING)
    batching = ServingSpec.model_validate({"dynamicBatching": {"maxQueueDelayMicroseconds": 9}})
    cache = ServingSpec.model_validate({"responseCache": {"enabled": True}})
    scaled = ServingSpec.model_validate({"replicas": 5, "autoscaling": {"maxReplicas": 9}})
    batch_limit = ServingSpec.model_validate({"maxBatchSize": 8})
    assert spec_recipe_digest("m", source, opt, batching) == base
    assert spec_recipe_digest("m", source, opt, cache) == base
    assert spec_recipe_digest("m", source, opt, batch_limit) != base
    assert spec_recipe_digest("other-name", source, opt, SERVING) != base
    assert spec_recipe_digest("m", source, opt, scaled) == base

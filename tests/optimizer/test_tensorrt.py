"""TensorRT itself: the real module on every machine (tier ``tensorrt``), the builder on a GPU.

``tensorrt`` tests need the pinned libraries and bindings (``make tensorrt``), not a GPU; CI
installs them, and with ``OPTISERVE_REQUIRE_TIERS=1`` a skip there fails. ``gpu`` tests build
and run engines and skip where no GPU is visible (benchmarks/gpu_tensorrt/ runs them on one).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve_optimizer.artifact import ModelArtifact, PassContext
from optiserve_optimizer.errors import MissingDependencyError, PassFailedError
from optiserve_optimizer.progress import Progress
from tests.optimizer.conftest import make_mlp, make_npz
from tests.optimizer.runs import OptimizerRunner

ROOT = Path(__file__).resolve().parents[2]


def _pinned() -> dict[str, str]:
    lines = (ROOT / "hack/tensorrt/versions.env").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {k: v.strip('"') for k, v in pairs}


def _tensorrt_missing() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed (make tensorrt)"
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"import tensorrt failed: {exc}"
    return None


def _gpu_missing() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device visible"


@pytest.fixture
def trt_module() -> Any:
    reason = _tensorrt_missing()
    if reason:
        pytest.skip(reason)
    import tensorrt

    return tensorrt


def _context(tmp_path: Path, model: Path, eval_npz: Path) -> PassContext:
    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(eval_npz)}})
    return PassContext(SourceSpec(uri=str(model)), spec, tmp_path / "work", Progress())


# ---- the real module, no GPU needed ------------------------------------------------------------


@pytest.mark.tensorrt
def test_import_tensorrt_is_the_pinned_release_and_matches_the_stubs(trt_module: Any) -> None:
    pinned = _pinned()["TENSORRT_VERSION"]
    assert trt_module.__version__ == pinned
    assert trt_module.__name__ == "tensorrt_bindings"  # `tensorrt` is NVIDIA's bindings module
    stubs = (ROOT / "typings/tensorrt_bindings/VERSION").read_text().strip()
    assert stubs == pinned, "typings/ are stale: run hack/tensorrt/stubs.sh"


@pytest.mark.tensorrt
def test_committed_stubs_are_what_the_real_bindings_generate(
    trt_module: Any, tmp_path: Path
) -> None:
    import subprocess
    import sys

    venv = Path(sys.executable).parent.parent
    subprocess.run(
        ["bash", str(ROOT / "hack/tensorrt/stubs.sh"), "--venv", str(venv), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "typings/tensorrt_bindings"
    generated = tmp_path / "tensorrt_bindings"
    names = sorted(p.name for p in committed.iterdir())
    assert names == sorted(p.name for p in generated.iterdir())
    for name in names:
        same = (committed / name).read_bytes() == (generated / name).read_bytes()
        assert same, f"typings/tensorrt_bindings/{name} is stale: run hack/tensorrt/stubs.sh"


@pytest.mark.tensorrt
def test_the_libraries_load_from_the_cache_without_ld_library_path(trt_module: Any) -> None:
    import os

    import tensorrt_libs

    maps = Path("/proc/self/maps").read_text()
    for name in tensorrt_libs.LIBRARIES:
        assert str(tensorrt_libs.LIB_DIR / name) in maps
    assert str(tensorrt_libs.LIB_DIR) not in os.environ.get("LD_LIBRARY_PATH", "")


@pytest.mark.tensorrt
def test_missing_libraries_are_named_at_import(trt_module: Any) -> None:
    import subprocess
    import sys

    env = {"OPTISERVE_TENSORRT_LIBS": "/nonexistent/tensorrt", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-c", "import tensorrt"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 1
    assert "TensorRT's libraries are missing from /nonexistent/tensorrt" in run.stderr
    assert "run hack/tensorrt/install.sh (make tensorrt)" in run.stderr
    assert "libnvinfer.so.11" in run.stderr  # no libnvinfer at all: the pinned major


@pytest.mark.tensorrt
def test_the_loader_follows_the_major_of_the_libraries_it_finds(
    trt_module: Any, tmp_path: Path
) -> None:
    """The GPU runner carries TensorRT 10.6 (versions.env): the loader asks for its sonames."""
    import subprocess
    import sys

    (tmp_path / "libnvinfer.so.10").write_bytes(b"")
    env = {"OPTISERVE_TENSORRT_LIBS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-c", "import tensorrt_libs"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 1
    assert "(libnvinfer_plugin.so.10, libnvonnxparser.so.10)" in run.stderr


def test_install_refuses_a_jar_whose_sha1_differs_and_leaves_nothing(tmp_path: Path) -> None:
    import subprocess

    fake = tmp_path / "tensorrt.jar"
    fake.write_bytes(b"PK not the pinned jar")
    cache = tmp_path / "cache"
    run = subprocess.run(
        ["bash", str(ROOT / "hack/tensorrt/install.sh"), "--libs-only"],
        env={"OPTISERVE_CACHE": str(cache), "OPTISERVE_TENSORRT_JAR": str(fake), "HOME": "/x"}
        | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert f"sha1 {hashlib.sha1(fake.read_bytes()).hexdigest()}" in run.stderr
    assert sorted(p.name for p in cache.iterdir()) == [".tensorrt.lock"]  # no half install
    where = subprocess.run(
        ["bash", str(ROOT / "hack/tensorrt/install.sh"), "--print-dir"],
        env={"OPTISERVE_CACHE": str(cache), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    pinned = _pinned()["TENSORRT_REDIST_VERSION"]
    assert where.stdout.strip() == f"{cache}/tensorrt-{pinned}/lib"  # keyed by the version


@pytest.mark.tensorrt
def test_settings_name_real_builder_flags_and_pools(trt_module: Any) -> None:
    from optiserve_optimizer.passes.tensorrt_config import build_settings

    members = trt_module.BuilderFlag.__members__
    for config in ({"sparseWeights": True}, {"precision": "fp16"}, {"precision": "int8"}):
        assert set(build_settings(config).flags) <= set(members)
    assert "SPARSE_WEIGHTS" in members and "WORKSPACE" in trt_module.MemoryPoolType.__members__
    # Why precision lives in the graph: TensorRT 11 removed the weak-typing flags.
    assert not {"FP16", "INT8", "BF16", "OBEY_PRECISION_CONSTRAINTS"} & set(members)
    assert "STRONGLY_TYPED" in trt_module.NetworkDefinitionCreationFlag.__members__


@pytest.mark.tensorrt
def test_profile_shapes_convert_to_real_dims(trt_module: Any) -> None:
    from optiserve_optimizer.passes.tensorrt_config import plan_profile

    plan = plan_profile([("x", (-1, 4))], {"x": {"min": [1, 4], "opt": [8, 4], "max": [32, 4]}})
    shape = dict(plan.shapes)["x"]
    dims = trt_module.Dims(shape.max)
    assert list(dims) == [32, 4] and len(dims) == 2  # iteration: added to the stubs, real here


def test_precision_check_reads_real_converted_graphs(tmp_path: Path) -> None:
    from optiserve_optimizer.passes.quantize import Quantize
    from optiserve_optimizer.passes.tensorrt_build import graph_types
    from optiserve_optimizer.passes.tensorrt_config import check_graph_precision

    model = make_mlp(tmp_path / "mlp.onnx")
    calib = make_npz(tmp_path / "calib.npz", 32)
    ctx = _context(tmp_path, model, calib)
    fp32 = ModelArtifact(onnx=model)
    with pytest.raises(PassFailedError, match="fp16 needs an FP16 graph"):
        check_graph_precision("fp16", *graph_types(model))
    ctx.step_label = "fp16"
    fp16 = Quantize().run(fp32, {"precision": "fp16"}, ctx).artifact
    check_graph_precision("fp16", *graph_types(fp16.onnx))
    import onnx

    # Topologically sorted (the converter appends its input casts last): the checker, the
    # shapes pass and TensorRT's parser read it.
    onnx.checker.check_model(onnx.load(str(fp16.onnx)))
    x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    from optiserve_optimizer.runners import onnx_runner

    ref, half = onnx_runner(model)({"input": x})[0], onnx_runner(fp16.onnx)({"input": x})[0]
    assert half.dtype == np.float32 and np.abs(ref - half).max() < 5e-3
    ctx.step_label = "int8"
    int8 = (
        Quantize()
        .run(
            fp32,
            {"precision": "int8", "method": "static", "calibration": str(calib), "symmetric": True},
            ctx,
        )
        .artifact
    )
    check_graph_precision("int8", *graph_types(int8.onnx))
    from onnx import numpy_helper

    zero_points = [
        numpy_helper.to_array(i)
        for i in onnx.load(str(int8.onnx)).graph.initializer
        if i.name.endswith("zero_point")
    ]
    assert zero_points and all(not z.any() for z in zero_points)  # symmetric, as TensorRT needs


@pytest.mark.tensorrt
@pytest.mark.skipif(_gpu_missing() is None, reason="a GPU is visible: the gpu tests build instead")
def test_no_gpu_is_a_typed_error_naming_the_cause(trt_module: Any, tmp_path: Path) -> None:
    from optiserve_optimizer.passes.tensorrt_build import TensorRTBuild

    model = make_mlp(tmp_path / "mlp.onnx")
    ctx = _context(tmp_path, model, make_npz(tmp_path / "eval.npz", 16))
    with pytest.raises(MissingDependencyError) as caught:
        TensorRTBuild().run(ModelArtifact(onnx=model), {"precision": "fp32"}, ctx)
    assert str(caught.value) == (
        f"[tensorrt] no usable CUDA GPU: TensorRT {trt_module.__version__} could not create a "
        "builder (CUDA error 35: CUDA driver version is insufficient for CUDA runtime version)"
    )
    assert caught.value.exit_code == 3
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").rglob("*.plan"))


@pytest.mark.tensorrt
@pytest.mark.skipif(_gpu_missing() is None, reason="a GPU is visible: the gpu tests build instead")
def test_optimize_with_tensorrt_and_no_gpu_fails_first_with_exit_3(
    tmp_path: Path, optimizer: OptimizerRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    optimization = {
        "target": {"device": "gpu"},
        "tensorrt": {"enabled": True},
        "accuracy": {"dataset": str(make_npz(tmp_path / "eval.npz", 16))},
        "benchmark": {"batchSizes": [1, 8], "iterations": 3, "warmup": 1},
    }
    source = {"uri": str(model), "format": "onnx"}
    run = optimizer.optimize("mlp", source, optimization, expect=3)
    error, out = run.error, run.out
    assert error["type"] == "MissingDependencyError" and error["pass"] == "tensorrt"
    assert error["message"].startswith("no usable CUDA GPU: TensorRT 11.")
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    assert "baseline" not in printed.out + printed.err  # it failed before any work
    assert not out.exists() or not list(out.rglob("*.plan"))


# ---- a GPU ---------------------------------------------------------------------------------


@pytest.fixture
def gpu(trt_module: Any) -> Any:
    reason = _gpu_missing()
    if reason:
        pytest.skip(reason)
    return trt_module


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_with_a_derived_profile_and_reuses_the_timing_cache(
    gpu: Any, tmp_path: Path, precision: str
) -> None:
    from optiserve_optimizer.passes.quantize import Quantize
    from optiserve_optimizer.passes.shapes import Shapes
    from optiserve_optimizer.passes.tensorrt_build import TensorRTBuild, tensorrt_runner

    model = make_mlp(tmp_path / "mlp.onnx")
    eval_npz = make_npz(tmp_path / "eval.npz", 64)
    ctx = _context(tmp_path, model, eval_npz)
    artifact = Shapes().run(ModelArtifact(onnx=model), {}, ctx).artifact
    if precision == "fp16":
        artifact = Quantize().run(artifact, {"precision": "fp16"}, ctx).artifact
    first = TensorRTBuild().run(artifact, {"precision": precision}, ctx)
    assert first.artifact.plan is not None and first.artifact.plan.stat().st_size > 0
    assert first.metrics["timingCache"] == "cold: no cache file yet"
    assert first.metrics["profiles"]["input"]["max"] == [32, 16]
    ctx.step_label = "again"
    second = TensorRTBuild().run(artifact, {"precision": precision}, ctx)
    assert second.metrics["timingCacheReused"] is True
    x = np.load(eval_npz)["input"][:4]
    out = tensorrt_runner(first.artifact.plan)({"input": x})[0]
    assert out.shape == (4, 10)


@pytest.mark.gpu
def test_real_builder_config_takes_the_planned_flags_profile_and_a_corrupt_cache(
    gpu: Any, tmp_path: Path
) -> None:
    from optiserve_optimizer.passes.tensorrt_build import (
        TensorRTBuild,
        _Logger,
        apply_profile,
        apply_settings,
        create_builder,
    )
    from optiserve_optimizer.passes.tensorrt_config import build_settings, plan_profile

    builder = create_builder(_Logger(print))
    config = builder.create_builder_config()
    apply_settings(config, build_settings({"sparseWeights": True, "workspaceMib": 256}))
    assert config.get_flag(gpu.BuilderFlag.SPARSE_WEIGHTS)
    assert config.get_memory_pool_limit(gpu.MemoryPoolType.WORKSPACE) == 256 << 20
    profile = builder.create_optimization_profile()
    apply_profile(
        profile,
        plan_profile([("x", (-1, 4))], {"x": {"min": [1, 4], "opt": [8, 4], "max": [32, 4]}}),
    )
    assert [list(d) for d in profile.get_shape("x")] == [[1, 4], [8, 4], [32, 4]]

    model = make_mlp(tmp_path / "mlp.onnx")
    ctx = _context(tmp_path, model, make_npz(tmp_path / "eval.npz", 16))
    profiles = {"input": {"min": [1, 16], "opt": [4, 16], "max": [8, 16]}}
    first = TensorRTBuild().run(ModelArtifact(onnx=model), {"profiles": profiles}, ctx)
    cache_file = next((tmp_path / "timing-cache").iterdir())
    cache_file.write_bytes(cache_file.read_bytes()[:-7])  # truncated by a crash, say
    ctx.step_label = "after-corruption"
    again = TensorRTBuild().run(ModelArtifact(onnx=model), {"profiles": profiles}, ctx)
    assert again.metrics["timingCache"].startswith("cold: the cache file is corrupt")
    assert again.artifact.plan is not None and first.artifact.plan is not None

"""The TensorRT build's decisions as data: profiles, settings, precision checks, the cache file.

None of these needs TensorRT or a GPU; tests/optimizer/test_tensorrt.py checks them against
the real module (and, on a GPU, the real builder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optiserve.model_io import TensorSpec
from optiserve_optimizer.errors import PassFailedError, SettingsError
from optiserve_optimizer.passes.shapes import derive_profiles
from optiserve_optimizer.passes.tensorrt_config import (
    ShapeRange,
    build_settings,
    builder_failure_message,
    builder_failure_reason,
    check_graph_precision,
    decode_timing_cache,
    encode_timing_cache,
    plan_profile,
    read_timing_cache,
    timing_cache_path,
    write_timing_cache,
)

MINILM_INPUTS = [(n, (-1, -1)) for n in ("input_ids", "attention_mask", "token_type_ids")]


def test_profile_from_the_data_covers_the_real_lengths_and_benchmark_batches() -> None:
    # 3 sentences padded to 16 tokens, real lengths 5, 9, 12; benchmark batches 1, 8, 32.
    mask = np.zeros((3, 16), dtype=np.int64)
    for row, length in enumerate((5, 9, 12)):
        mask[row, :length] = 1
    arrays = {"input_ids": mask * 7, "attention_mask": mask, "token_type_ids": mask * 0}
    specs = [TensorSpec(name=n, dtype="int64", shape=(-1,)) for n, _ in MINILM_INPUTS]
    profiles, facts = derive_profiles(specs, arrays, [1, 8, 32])
    plan = plan_profile(MINILM_INPUTS, profiles)
    assert [name for name, _ in plan.shapes] == [n for n, _ in MINILM_INPUTS]
    # batch 1..32 (opt: the median batch asked for); sequence min 5, opt p50=9 -> 16, max 12 -> 16
    assert dict(plan.shapes)["input_ids"] == ShapeRange((1, 5), (8, 16), (32, 16))
    assert facts["lengthMax"] == 12
    assert plan.to_wire()["attention_mask"] == {"min": [1, 5], "opt": [8, 16], "max": [32, 16]}


def test_profile_skips_static_inputs_and_keeps_network_order() -> None:
    inputs = [("image", (-1, 1, 8, 8)), ("scale", (1,))]
    profiles = {
        "scale": {"min": [1], "opt": [1], "max": [1]},
        "image": {"min": [1, 1, 8, 8], "opt": [16, 1, 8, 8], "max": [64, 1, 8, 8]},
    }
    plan = plan_profile(inputs, profiles)
    assert [name for name, _ in plan.shapes] == ["image"]
    assert dict(plan.shapes)["image"].opt == (16, 1, 8, 8)


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ({}, "no shape profile for dynamic input x [-1, 4]"),
        (
            {"x": {"min": [1, 4], "opt": [8, 4], "max": [4, 4]}},
            "axis 0 needs 1 <= min <= opt <= max",
        ),
        ({"x": {"min": [0, 4], "opt": [8, 4], "max": [9, 4]}}, "axis 0 needs 1 <= min"),
        ({"x": {"min": [1, 4], "opt": [8, 5], "max": [9, 4]}}, "axis 1 is fixed at 4"),
        ({"x": {"min": [1], "opt": [8], "max": [9]}}, "every shape must have rank 2"),
        ({"x": {"min": [1, 4], "max": [9, 4]}}, "needs integer min/opt/max"),
        (
            {
                "x": {"min": [1, 4], "opt": [8, 4], "max": [9, 4]},
                "input_id": {"min": [1], "opt": [1], "max": [1]},
            },
            "inputs the model does not have: ['input_id']",
        ),
    ],
)
def test_bad_profiles_are_refused_before_any_build(
    profiles: dict[str, dict[str, list[int]]], message: str
) -> None:
    with pytest.raises(PassFailedError, match="tensorrt") as caught:
        plan_profile([("x", (-1, 4))], profiles)
    assert message in str(caught.value)


def test_settings_map_precision_and_sparsity_to_flags_and_workspace() -> None:
    fp32 = build_settings({})
    assert (fp32.precision, fp32.flags, fp32.workspace_bytes) == ("fp32", (), 4096 << 20)
    assert fp32.timing_cache is True
    sparse = build_settings({"precision": "fp16", "sparseWeights": True, "workspaceMib": 512})
    assert sparse.flags == ("SPARSE_WEIGHTS",) and sparse.workspace_bytes == 512 << 20
    # TensorRT 11: no precision flags; the graph carries FP16 / INT8 (checked below).
    assert build_settings({"precision": "int8"}).flags == ()
    assert build_settings({"timingCache": False}).timing_cache is False
    # The typed settings refuse what TensorRT cannot build, naming the pass and the field.
    with pytest.raises(SettingsError, match=r"\[tensorrt\].*precision: Input should be 'fp32'"):
        build_settings({"precision": "bf16"})
    with pytest.raises(SettingsError, match=r"\[tensorrt\].*workspaceMib: Input should be greater"):
        build_settings({"workspaceMib": 0})
    with pytest.raises(SettingsError, match=r"\[tensorrt\].*sparseWeight: Extra inputs"):
        build_settings({"sparseWeight": True})


def test_precision_must_be_in_the_graph() -> None:
    check_graph_precision("fp32", {"FLOAT"}, {"Gemm"})
    check_graph_precision("fp16", {"FLOAT", "FLOAT16"}, {"Cast", "Gemm"})
    check_graph_precision("int8", {"FLOAT", "INT8"}, {"QuantizeLinear", "DequantizeLinear"})
    with pytest.raises(PassFailedError, match="fp16 needs an FP16 graph"):
        check_graph_precision("fp16", {"FLOAT"}, {"Gemm"})
    with pytest.raises(PassFailedError, match="int8 needs a graph with QuantizeLinear"):
        check_graph_precision("int8", {"FLOAT"}, {"Gemm"})


# ---- the timing-cache file --------------------------------------------------------------------


def test_timing_cache_round_trip_is_warm_and_keyed_by_version_and_gpu(tmp_path: Path) -> None:
    path = timing_cache_path(tmp_path / "timing-cache", "11.2.1.2", "9.0")
    assert path.name == "trt11.2.1.2-sm90.cache"
    assert read_timing_cache(path, "11.2.1.2", "9.0").status == "cold: no cache file yet"
    payload = bytes(range(256)) * 40
    write_timing_cache(path, payload, "11.2.1.2", "9.0")
    warm = read_timing_cache(path, "11.2.1.2", "9.0")
    assert warm.warm and warm.payload == payload
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file beside it
    write_timing_cache(path, b"newer", "11.2.1.2", "9.0")  # replaced, not appended
    assert read_timing_cache(path, "11.2.1.2", "9.0").payload == b"newer"


@pytest.mark.parametrize(
    ("version", "capability", "status"),
    [
        ("10.15.1", "9.0", "cold: the cache is from TensorRT 11.2.1.2"),
        ("11.2.1.2", "8.0", "cold: the cache is for sm 9.0"),
    ],
)
def test_a_cache_from_another_tensorrt_or_gpu_class_is_not_used(
    tmp_path: Path, version: str, capability: str, status: str
) -> None:
    path = tmp_path / "t.cache"
    write_timing_cache(path, b"timings", "11.2.1.2", "9.0")
    read = read_timing_cache(path, version, capability)
    assert (read.status, read.payload, read.warm) == (status, b"", False)


def test_corrupt_truncated_or_foreign_cache_files_build_cold(tmp_path: Path) -> None:
    blob = encode_timing_cache(b"x" * 1000, "11.2.1.2", "9.0")
    flipped = bytearray(blob)
    flipped[-10] ^= 0xFF
    corrupt = "cold: the cache file is corrupt (size or sha256 differ)"
    assert decode_timing_cache(bytes(flipped), "11.2.1.2", "9.0").status == corrupt
    assert decode_timing_cache(blob[:-1], "11.2.1.2", "9.0").status == corrupt
    foreign = "cold: the cache file is not an optiserve timing cache"
    # TensorRT's own serialized cache (no header), an empty file, binary garbage:
    for raw in (b"\x00\x01TRTC" * 50, b"", b"\xff\xfe\n{}", b'{"format": 2}\nxyz'):
        assert decode_timing_cache(raw, "11.2.1.2", "9.0").status == foreign
    directory = tmp_path / "is-a-dir.cache"
    directory.mkdir()
    unreadable = read_timing_cache(directory, "11.2.1.2", "9.0")
    assert unreadable.status.startswith("cold: the cache file cannot be read")


def test_a_failed_cache_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.cache"
    write_timing_cache(path, b"good", "11.2.1.2", "9.0")

    def full_disk(self: Path, target: Path) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_timing_cache(path, b"new", "11.2.1.2", "9.0")
    monkeypatch.undo()
    assert read_timing_cache(path, "11.2.1.2", "9.0").payload == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["t.cache"]


def test_builder_failure_reason_quotes_the_cuda_error() -> None:
    # What TensorRT 11.2 logs on a machine without a GPU (seen on this project's CPU CI).
    logged = [
        "createInferBuilder: Error Code 6: API Usage Error (CUDA initialization failure with "
        "error: 35. Please check your CUDA installation)",
        "[checkMacros.cpp::catchCudaError::247] Error Code 1: Cuda Runtime (In catchCudaError "
        "at /_src/common/dispatch/checkMacros.cpp:247 (cudaError 35: CUDA driver version is "
        "insufficient for CUDA runtime version))",
    ]
    assert builder_failure_reason(logged) == (
        "CUDA error 35: CUDA driver version is insufficient for CUDA runtime version"
    )
    assert builder_failure_reason(["Error Code 2: out of memory"]) == "Error Code 2: out of memory"
    assert builder_failure_reason([]) == "TensorRT logged no reason"


def test_a_missing_builder_library_is_an_incomplete_install_not_a_missing_gpu() -> None:
    # What TensorRT 11.2 from the Maven Central redist logged on a lent H100 (2026-11-27): the
    # redist leaves out the per-architecture builder library.
    logged = [
        "createInferBuilder: Error Code 6: API Usage Error (Unable to load library: "
        "libnvinfer_builder_resource_sm90.so.11.2.1: libnvinfer_builder_resource_sm90.so.11.2.1: "
        "cannot open shared object file: No such file or directory In Impl at "
        "/_src/runtime/dispatch/libLoader.cpp:305)"
    ]
    message = builder_failure_message("11.2.1.2", logged)
    assert message.startswith("incomplete TensorRT install: TensorRT 11.2.1.2 could not load ")
    assert "libnvinfer_builder_resource_sm90.so.11.2.1, which its builder needs" in message
    assert "no usable CUDA GPU" not in message
    assert message.endswith("(NVIDIA's tensorrt-cu13-libs package ships it)")
    # TensorRT 10.6 from its redist, before the GPU runner put its folder on the loader's path
    # (lent H100, 2026-11-27): built with CUDA 12, so NVIDIA's cu12 wheel is the one to name.
    logged_10 = [
        "createInferBuilder: Error Code 6: API Usage Error (Unable to load library: "
        "libnvinfer_builder_resource.so.10.6.0: libnvinfer_builder_resource.so.10.6.0: cannot "
        "open shared object file: No such file or directory)"
    ]
    message = builder_failure_message("10.6.0.post2", logged_10)
    assert "could not load libnvinfer_builder_resource.so.10.6.0, which its builder" in message
    assert message.endswith("(NVIDIA's tensorrt-cu12-libs package ships it)")
    cuda = ["(cudaError 35: CUDA driver version is insufficient for CUDA runtime version)"]
    assert builder_failure_message("11.2.1.2", cuda) == (
        "no usable CUDA GPU: TensorRT 11.2.1.2 could not create a builder (CUDA error 35: CUDA "
        "driver version is insufficient for CUDA runtime version)"
    )

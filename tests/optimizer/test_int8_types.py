"""INT8 static types are chosen by measurement, and the measurement is recorded."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from optiserve.api import OptimizationSpec, SourceSpec
from optiserve_optimizer.artifact import ModelArtifact, PassContext
from optiserve_optimizer.passes import int8_types, torch_export
from optiserve_optimizer.passes.quantize import Quantize
from optiserve_optimizer.progress import Progress


class ResidualBlock(torch.nn.Module):
    """A conv block with a residual join: the shape where the INT8 activation type matters.

    On an AMD EPYC with AVX512-VNNI (1 thread), S8S8 ran this at 1.0x FP32 and U8S8 at 3.2x;
    without the residual join both ran at 3x. Other CPUs may differ, which is the point.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, width, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(width, width, 3, padding=1)
        self.fc = torch.nn.Linear(width, 10)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        input = torch.max_pool2d(torch.relu(self.stem(input)), 2)
        input = torch.relu(self.conv2(torch.relu(self.conv1(input))) + input)
        pooled = torch.nn.functional.adaptive_avg_pool2d(input, 1)
        out: torch.Tensor = self.fc(torch.flatten(pooled, 1))
        return out


def residual_model(path: Path, x: np.ndarray[Any, Any]) -> Path:
    torch.manual_seed(0)
    scripted = torch.jit.script(ResidualBlock().eval())
    torch_export.export_onnx(scripted, {"input": x[:2]}, path, "test")
    return path


def context(tmp_path: Path, eval_npz: Path, device: str = "cpu") -> PassContext:
    spec = OptimizationSpec.model_validate(
        {"accuracy": {"dataset": str(eval_npz)}, "target": {"device": device}}
    )
    return PassContext(
        SourceSpec(uri=str(tmp_path / "conv.onnx")), spec, tmp_path / "work", Progress()
    )


@pytest.fixture
def conv_model(tmp_path: Path) -> tuple[Path, Path]:
    x = np.random.default_rng(0).normal(size=(48, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=x)
    return residual_model(tmp_path / "conv.onnx", x), tmp_path / "calib.npz"


def activation_dtypes(path: Path) -> set[Any]:
    """Element types of the activation QuantizeLinear zero points in the quantized graph."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        inits[n.input[2]].dtype
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    }


def test_static_int8_records_and_applies_the_fastest_faithful_types(
    tmp_path: Path, conv_model: tuple[Path, Path]
) -> None:
    model, calib = conv_model
    config = {"precision": "int8", "method": "static", "calibration": str(calib), "samples": 32}
    result = Quantize().run(ModelArtifact(onnx=model), config, context(tmp_path, calib))
    types = result.metrics["int8Types"]
    trials = {t["types"]: t for t in types["trials"]}
    # Every candidate was measured: both activation types, the same slice, the same rounds.
    assert set(trials) | {f["types"] for f in types["failed"]} == {
        c.label for c in int8_types.CANDIDATES
    }
    assert {"U8S8-per-channel", "S8S8-per-channel"} <= set(trials)
    assert types["rows"] == 32 and types["rounds"] == int8_types.ROUNDS
    for trial in trials.values():
        assert 0 < trial["minMs"] <= trial["medianMs"] <= trial["maxMs"]
        assert trial["speedupVsFp32"] == pytest.approx(
            types["fp32"]["medianMs"] / trial["medianMs"], rel=1e-2
        )
        assert trial["relError"] < 0.1
    # The choice follows from the recorded rounds, whichever combination wins on this CPU:
    # the preferred matching one, unless a matching one was faster beyond the noise.
    matching = [label for label, t in trials.items() if t["matches"]]
    rounds = {label: t["roundsMs"] for label, t in trials.items()}
    assert all(len(r) == int8_types.ROUNDS for r in rounds.values())
    chosen = types["chosen"]
    assert chosen in matching
    if chosen != matching[0]:
        assert int8_types.beats(rounds[chosen], rounds[matching[0]])
        faster = [m for m in matching if int8_types.beats(rounds[m], rounds[matching[0]])]
        assert trials[chosen]["medianMs"] == min(trials[m]["medianMs"] for m in faster)
    else:
        assert not any(int8_types.beats(rounds[m], rounds[chosen]) for m in matching[1:])
    assert types["activationType"] == ("QUInt8" if types["chosen"].startswith("U8") else "QInt8")
    expected = np.uint8 if types["activationType"] == "QUInt8" else np.int8
    assert activation_dtypes(result.artifact.onnx) == {np.dtype(expected)}
    # The CPU facts that decide the kernels are recorded beside the timings.
    assert types["cpu"]["model"] and isinstance(types["cpu"]["isa"], list)
    assert types["threads"] == 1
    leftovers = [p.name for p in result.artifact.onnx.parent.iterdir()]
    assert leftovers == [result.artifact.onnx.name]  # no losing model, no calibration cache


def test_a_gpu_target_gets_signed_int8_without_a_cpu_timing(
    tmp_path: Path, conv_model: tuple[Path, Path]
) -> None:
    model, calib = conv_model
    config = {"precision": "int8", "method": "static", "calibration": str(calib), "samples": 16}
    result = Quantize().run(ModelArtifact(onnx=model), config, context(tmp_path, calib, "gpu"))
    assert result.metrics["int8Types"]["chosen"] == int8_types.GPU_CHOICE.label
    assert activation_dtypes(result.artifact.onnx) == {np.dtype(np.int8)}


def activation_zero_points(path: Path) -> list[Any]:
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [
        inits[n.input[2]]
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    ]


def int32_dequantized(path: Path) -> list[str]:
    """Initializers of type int32 that a DequantizeLinear reads (ORT's quantized biases)."""
    model = onnx.load(str(path))
    int32 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT32}
    return [
        n.input[0]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in int32
    ]


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_before_tensorrt_activations_are_symmetric_signed_and_unmeasured(
    tmp_path: Path, conv_model: tuple[Path, Path], device: str
) -> None:
    """The plan's quantize step before TensorRT asks for ``symmetric``: zero-point 0 on every
    activation (TensorRT refuses others), signed int8, and no CPU timing on either target."""
    model, calib = conv_model
    config = {"precision": "int8", "method": "static", "calibration": str(calib), "samples": 16}
    ctx = context(tmp_path, calib, device)
    ctx.step_label = "symmetric"
    result = Quantize().run(ModelArtifact(onnx=model), {**config, "symmetric": True}, ctx)
    types = result.metrics["int8Types"]
    assert (types["chosen"], types["activationSymmetric"]) == (int8_types.GPU_CHOICE.label, True)
    assert "trials" not in types
    zero_points = activation_zero_points(result.artifact.onnx)
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    # Biases stay float: TensorRT's parser refuses an int32 DequantizeLinear.
    assert int32_dequantized(result.artifact.onnx) == []
    if device == "gpu":  # without it, post-ReLU ranges get a nonzero zero-point: what it fixes
        ctx.step_label = "asymmetric"
        plain = Quantize().run(ModelArtifact(onnx=model), config, ctx)
        assert any(z.any() for z in activation_zero_points(plain.artifact.onnx))
        assert int32_dequantized(plain.artifact.onnx)  # ORT's own default: what is switched off


def test_pick_prefers_speed_only_among_faithful_types() -> None:
    errors = {"preferred": 0.010, "fast-but-wrong": 0.30, "fast": 0.012, "noisy": 0.011}
    times = {
        "preferred": [5.0, 5.1, 4.9, 5.0, 5.2, 5.0, 5.1],
        "fast-but-wrong": [1.0] * 7,
        "fast": [2.0, 2.1, 2.0, 6.0, 2.2, 2.0, 2.1],  # one slow round: still 6 of 7
        "noisy": [1.5, 9.0, 1.5, 9.0, 1.5, 9.0, 1.5],  # lower median, wins only 4 of 7
    }
    chosen, matching = int8_types.pick(errors, times)
    assert (chosen, matching) == ("fast", ["preferred", "fast", "noisy"])
    del times["fast"], errors["fast"]
    assert int8_types.pick(errors, times)[0] == "preferred"  # within the noise: no change


def test_interleaved_timing_rotates_the_order() -> None:
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = int8_types.time_interleaved(runners, rounds=3)
    assert all(len(t) == 3 and min(t) > 0 for t in times.values())
    timed = [name for name, _ in itertools.groupby(calls[6:])]  # after two warm-up runs each
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]

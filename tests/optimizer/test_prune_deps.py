"""Channel dependency groups: BatchNorm, residual joins and concatenations pruned together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from optiserve_optimizer.onnx_utils import session
from optiserve_optimizer.passes import prune_deps, prune_graph, torch_edit, torch_export
from optiserve_optimizer.passes.pruning import plan_edits
from tests.optimizer.prune_models import TinyResNet, randomize_batchnorm, silence_channels

SINGLES = ("block1.conv1.0.weight", "block2.conv1.0.weight", "left.0.weight", "right.0.weight")
GROUPS = [*TinyResNet.COUPLED, *({name} for name in (*SINGLES, "mix.weight"))]


def export(module: Any, path: Path, x: np.ndarray[Any, Any]) -> onnx.ModelProto:
    (name,) = torch_export.input_names(module)  # "input" for ours, "x" for torchvision's
    torch_export.export_onnx(module, {name: x}, path, "prune")
    return onnx.load(str(path))


@pytest.fixture
def sample() -> np.ndarray[Any, Any]:
    return np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)


def groups_of(model: onnx.ModelProto) -> set[frozenset[str]]:
    prune_graph.materialize_identities(model)
    return {frozenset(g.producers) for g in prune_deps.analyse(model).groups.values()}


def test_groups_follow_residual_joins_and_concatenations(
    tmp_path: Path, sample: np.ndarray[Any, Any]
) -> None:
    torch.manual_seed(0)
    model = export(torch.jit.script(TinyResNet().eval()), tmp_path / "m.onnx", sample)
    assert groups_of(model) == {frozenset(g) for g in GROUPS}  # fc feeds the output: kept


@pytest.mark.parametrize("compile_with", ["script", "trace"])
def test_silenced_channels_are_removed_without_changing_the_output(
    tmp_path: Path, sample: np.ndarray[Any, Any], compile_with: str
) -> None:
    torch.manual_seed(0)
    eager = TinyResNet().eval()
    randomize_batchnorm(eager)
    silenced = silence_channels(eager, GROUPS)
    if compile_with == "script":
        scripted = torch.jit.script(eager)
    else:  # a traced source, saved and loaded as a user's file would be
        traced = torch.jit.trace(eager, torch.from_numpy(sample))  # type: ignore[no-untyped-call]
        traced.save(str(tmp_path / "traced.pt"))
        scripted = torch.jit.load(str(tmp_path / "traced.pt"))  # type: ignore[no-untyped-call]
    expected = scripted(torch.from_numpy(sample)).detach().numpy()
    model = export(scripted, tmp_path / "m.onnx", sample)
    edits, summary = plan_edits(model, "structured", 0.5, use_torch=True)
    assert summary["groups"] == len(GROUPS) and summary["coupledGroups"] == 2
    # The channels kept are exactly the live ones, in every member of a group.
    for weight, index in silenced.items():
        kept = dict(edits[weight][1])[0]
        assert set(kept).isdisjoint(index.tolist()), weight
    bn = edits["block2.conv2.1.running_var"][1]
    assert bn[0][0] == 0 and len(bn[0][1]) == 8  # BatchNorm statistics follow their conv
    torch_edit.apply_edits(scripted, edits, "prune")
    params = dict(scripted.named_parameters())
    assert params["mix.weight"].shape[:2] == (6, 8)  # concat of 3 + 5 kept channels
    assert params["fc.weight"].shape == (5, 6)
    got = scripted(torch.from_numpy(sample)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # The module still saves, loads and exports (what recovery trains and the server runs).
    torch_edit.save_and_export(
        scripted, tmp_path / "p.pt", tmp_path / "p.onnx", {"input": sample}, "prune"
    )
    onnx_out = session(tmp_path / "p.onnx").run(None, {"input": sample})[0]
    np.testing.assert_allclose(onnx_out, expected, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "p.onnx").stat().st_size < 0.45 * (tmp_path / "m.onnx").stat().st_size


def test_onnx_graphs_with_batchnorm_are_pruned_in_place(
    tmp_path: Path, sample: np.ndarray[Any, Any]
) -> None:
    torch.manual_seed(1)
    eager = TinyResNet().eval()
    randomize_batchnorm(eager, seed=1)
    silence_channels(eager, GROUPS, seed=1)
    expected = eager(torch.from_numpy(sample)).detach().numpy()
    model = export(torch.jit.script(eager), tmp_path / "m.onnx", sample)
    edits, _ = plan_edits(model, "structured", 0.5, use_torch=False)
    torch_edit.apply_edits_onnx(model, edits)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "p.onnx"))
    got = session(tmp_path / "p.onnx", level="disable").run(None, {"input": sample})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_channel_axis_that_is_reshaped_is_left_alone(tmp_path: Path) -> None:
    class Reshaping(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(8, 12)
            self.b = torch.nn.Linear(6, 4)
            self.c = torch.nn.Linear(8, 8)
            self.d = torch.nn.Linear(8, 3)

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            y = self.b(torch.relu(self.a(input)).reshape(-1, 6))
            out: torch.Tensor = self.d(torch.relu(self.c(input))) + y.sum()
            return out

    x = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    model = export(torch.jit.script(Reshaping().eval()), tmp_path / "m.onnx", x)
    deps = prune_deps.analyse(model)
    assert {g.producers for g in deps.groups.values()} == {("c.weight",)}
    assert deps.frozen >= 2  # a (reshaped) and d, b (outputs feeding a reshape and the sum)


def test_a_transformer_mlp_prunes_its_hidden_width_only(tmp_path: Path) -> None:
    """GELU (exported as Erf arithmetic) passes channels on; the residual join with a
    LayerNorm output (not a layer's channels) keeps the block's width."""

    class MlpBlock(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(8)
            self.fc1 = torch.nn.Linear(8, 32)
            self.fc2 = torch.nn.Linear(32, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            h = self.norm(input)
            hidden = torch.nn.functional.gelu(self.fc1(h))
            out: torch.Tensor = self.head(h + self.fc2(hidden))
            return out

    x = np.random.default_rng(0).normal(size=(4, 5, 8)).astype(np.float32)
    scripted = torch.jit.script(MlpBlock().eval())
    model = export(scripted, tmp_path / "m.onnx", x)
    assert {"Erf", "LayerNormalization"} <= {n.op_type for n in model.graph.node}
    edits, summary = plan_edits(model, "structured", 0.25, use_torch=True)
    assert summary["groups"] == 1
    torch_edit.apply_edits(scripted, edits, "prune")
    params = dict(scripted.named_parameters())
    assert params["fc1.weight"].shape == (24, 8) and params["fc1.bias"].shape == (24,)
    assert params["fc2.weight"].shape == (8, 24) and params["fc2.bias"].shape == (8,)
    assert scripted(torch.from_numpy(x)).shape == (4, 5, 3)


def test_a_per_channel_constant_shared_by_two_layers_couples_them(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    nodes = []
    for branch in ("a", "b"):
        nodes += [
            helper.make_node("Conv", ["input", f"{branch}1"], [f"{branch}_c"]),
            helper.make_node("Mul", [f"{branch}_c", "scale"], [f"{branch}_m"]),
            helper.make_node("Conv", [f"{branch}_m", f"{branch}2"], [f"out_{branch}"]),
        ]
    inits = [init("a1", 8, 3, 1, 1), init("b1", 8, 3, 1, 1), init("scale", 8, 1, 1)]
    inits += [init("a2", 2, 8, 1, 1), init("b2", 2, 8, 1, 1)]
    shape: list[str | int | None] = ["n", 3, 4, 4]
    graph = helper.make_graph(
        nodes,
        "shared",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(f"out_{b}", TensorProto.FLOAT, None) for b in "ab"],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert groups_of(model) == {frozenset({"a1", "b1"})}
    edits, _ = plan_edits(model, "structured", 0.5, use_torch=False)
    torch_edit.apply_edits_onnx(model, edits)
    onnx.save(model, str(tmp_path / "p.onnx"))
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    outputs = session(tmp_path / "p.onnx").run(None, {"input": x})
    assert [o.shape for o in outputs] == [(2, 2, 4, 4)] * 2
    assert numpy_helper.to_array(
        next(i for i in model.graph.initializer if i.name == "scale")
    ).shape == (4, 1, 1)


@pytest.mark.models
def test_resnet18_groups_agree_with_torch_pruning(tmp_path: Path) -> None:
    """Torch-Pruning's DependencyGraph on the eager module finds the groups we find on the
    exported TorchScript (it finds none in the ScriptModule itself, hence our own walk)."""
    import torch_pruning as tp
    import torchvision

    eager = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    graph = tp.DependencyGraph().build_dependency(eager, example_inputs=x)
    names = {module: name for name, module in eager.named_modules()}
    theirs = set()
    for group in graph.get_all_groups(root_module_types=[torch.nn.Conv2d, torch.nn.Linear]):
        producers = frozenset(
            f"{names[dep.target.module]}.weight"
            for dep, _ in group
            if dep.handler.__name__ == "prune_out_channels"
            and isinstance(dep.target.module, torch.nn.Conv2d | torch.nn.Linear)
        )
        if "fc.weight" not in producers:  # the classifier's outputs are the model's
            theirs.add(producers)
    model = export(torch.jit.script(eager), tmp_path / "r.onnx", x.numpy())
    ours = groups_of(model)
    assert ours == theirs
    assert len(ours) == 12 and sum(len(g) > 1 for g in ours) == 4

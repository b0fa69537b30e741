"""Channel dependency groups in an ONNX graph: which tensors must lose the same channels.

The idea is Torch-Pruning's DependencyGraph, applied to the exported ONNX graph instead of an
eager module. Our sources are TorchScript files, and Torch-Pruning 1.6.1 finds no group in a
ScriptModule (it recognises layers by their nn.Module type and follows autograd nodes; a
ScriptModule's layers are RecursiveScriptModules, so every weight is "unwrapped"). The
exported graph keeps the module's parameter and buffer names, so a group found here is applied
to the TorchScript module and to an ONNX source alike.

The walk: every Conv/Gemm/MatMul weight starts a group (its output channels). A tensor that
carries channels has a layout, the groups lying along its channel axis in order (a Concat
joins layouts). BatchNorm parameters and per-channel constants are sliced with the layout;
activations and pools pass it on; an Add/Mul of two carried tensors (a residual join) merges
their groups, so coupled layers lose the same channels; a Conv/Gemm/MatMul reading a carried
tensor is sliced on its input axis. Anything else that meets a carried tensor (Reshape,
Transpose, a graph output, a depthwise Conv...) freezes its groups: their channels stay.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.passes.prune_graph import (
    WeightRef,
    attr_float,
    attr_int,
    attr_ints,
    constant_nodes,
    initializers,
    weight_ref,
)
from optiserve_optimizer.passes.prune_math import expand_flattened, keep_top

if TYPE_CHECKING:
    import onnx

Indices = npt.NDArray[np.int64]
Slices = dict[str, tuple[tuple[int, Indices], ...]]

# Ops that keep every channel where it is (elementwise on input 0, or per-channel pooling).
PASS_THROUGH = {
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "Tanh",
    "Elu",
    "Selu",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Mish",
    "Clip",
    "Erf",
    "Exp",
    "Abs",
    "Neg",
    "Sqrt",
    "Reciprocal",
    "Softsign",
    "Dropout",
    "Identity",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
}
BINARY = {"Add", "Sub", "Mul", "Div"}
BN_EPSILON = 1e-5


@dataclass(frozen=True)
class Segment:
    group: int
    size: int


@dataclass(frozen=True)
class Carried:
    """What a tensor's channel axis holds. ``axis`` counts from the end (-3 for NCHW)."""

    layout: tuple[Segment, ...]
    axis: int
    rank: int | None  # None where the walk cannot know it (MatMul outputs)
    flattened: bool = False  # a Flatten spread each channel over spatial features
    producer: str | None = None  # weight whose raw output this is (for BatchNorm scales)

    @property
    def channels(self) -> int:
        return sum(s.size for s in self.layout)


@dataclass(frozen=True)
class Use:
    """Initializer ``name`` is indexed along ``axis`` by the channels of ``layout``."""

    name: str
    axis: int
    layout: tuple[Segment, ...]
    spatial: int = 1


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be kept or removed together, and how much each one matters."""

    producers: tuple[str, ...]
    importance: npt.NDArray[np.float64]

    @property
    def channels(self) -> int:
        return len(self.importance)


@dataclass
class Dependencies:
    groups: dict[int, ChannelGroup]  # prunable groups by root id
    frozen: int
    uses: list[Use]
    root: dict[int, int] = field(default_factory=dict)  # every group id -> its root


class _Walker:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.inits = initializers(model)
        self.weight_uses = Counter(name for node in model.graph.node for name in node.input)
        self.parent: list[int] = []
        self.frozen: set[int] = set()
        self.producers: dict[int, list[str]] = {}
        self.scales: dict[str, npt.NDArray[np.float64]] = {}
        self.uses: dict[tuple[str, int], Use] = {}
        self.carried: dict[str, Carried] = {}
        self.out_axis: dict[str, int] = {}
        # Values the walk may read but never slice: Constant nodes (torch exports scalars so).
        self.constants = constant_nodes(model)
        self.inits.update(self.constants)
        # MatMul(x, Transpose(W)): how torch exports a Linear on 3-D inputs.
        self.transposed = {
            node.output[0]: node.input[0]
            for node in model.graph.node
            if node.op_type == "Transpose"
            and node.input[0] in self.inits
            and self.inits[node.input[0]].ndim == 2
            and attr_ints(node, "perm") in ([], [1, 0])
        }

    # union-find over group ids
    def find(self, group: int) -> int:
        while self.parent[group] != group:
            self.parent[group] = self.parent[self.parent[group]]
            group = self.parent[group]
        return group

    def merge(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def freeze(self, carried: Carried | None) -> None:
        for seg in carried.layout if carried else ():
            self.frozen.add(seg.group)

    def use(self, name: str, axis: int, carried: Carried, spatial: int = 1) -> None:
        earlier = self.uses.get((name, axis))
        if earlier is not None and earlier.layout != carried.layout:
            # One tensor read by two layers (torch stores equal constants once): it can only
            # be sliced once, so both layers must keep the same channels, or none may change.
            sizes = [s.size for s in earlier.layout]
            if sizes == [s.size for s in carried.layout] and earlier.spatial == spatial:
                for old, new in zip(earlier.layout, carried.layout, strict=True):
                    self.merge(old.group, new.group)
            else:
                self.freeze(carried)
                self.frozen.update(seg.group for seg in earlier.layout)
            return
        self.uses[(name, axis)] = Use(name, axis, carried.layout, spatial)

    def new_group(self, weight: str, channels: int) -> tuple[Segment, ...]:
        self.parent.append(len(self.parent))
        self.producers[len(self.parent) - 1] = [weight]
        return (Segment(len(self.parent) - 1, channels),)

    def walk(self, model: onnx.ModelProto) -> None:
        for node in model.graph.node:
            ins = [self.carried.get(name) for name in node.input]
            if node.op_type in {"Conv", "Gemm", "MatMul"}:
                self._weight_op(node, ins)
            elif node.op_type in PASS_THROUGH and ins and ins[0] is not None:
                self._pass_through(node, ins)
            elif node.op_type == "BatchNormalization" and ins and ins[0] is not None:
                self._batch_norm(node, ins[0])
            elif node.op_type in BINARY and len(node.input) == 2 and any(ins):
                self._binary(node, ins)
            elif node.op_type == "Concat" and any(ins):
                self._concat(node, ins)
            elif node.op_type == "Flatten" and ins and ins[0] is not None:
                self._flatten(node, ins[0])
            else:
                for carried in ins:
                    self.freeze(carried)
        for output in model.graph.output:
            self.freeze(self.carried.get(output.name))

    def _weight_op(self, node: onnx.NodeProto, ins: list[Carried | None]) -> None:
        ref = weight_ref(node, self.inits)
        transposed = node.input[1] if len(node.input) > 1 else ""
        if (
            ref is None
            and node.op_type == "MatMul"
            and transposed in self.transposed
            and self.weight_uses[transposed] == 1
        ):  # W [out, in] read through Transpose: W's axis 1 meets the input, axis 0 is output
            ref = WeightRef(node.name, "MatMul", self.transposed[transposed], 1, 0)
        for carried in ins[1:]:
            self.freeze(carried)
        if ref is None or self.weight_uses[ref.name] > 1 or ref.name in self.constants:
            # not a weight, a weight shared by several layers, or a Constant node: leave it
            self.freeze(ins[0])
            return
        weights = self.inits[ref.name]
        if not np.issubdtype(weights.dtype, np.floating):
            self.freeze(ins[0])
            return
        source = ins[0]
        if source is not None:
            self._read_channels(ref.name, ref.input_axis, source, node.op_type, weights.ndim)
        channels = weights.shape[ref.output_axis]
        if ref.op == "Conv":
            out = Carried(self.new_group(ref.name, channels), 1 - weights.ndim, weights.ndim)
        else:
            rank = 2 if ref.op == "Gemm" else None
            out = Carried(self.new_group(ref.name, channels), -1, rank)
        out = replace(out, producer=ref.name)
        self.out_axis[ref.name] = ref.output_axis
        self.use(ref.name, ref.output_axis, out)
        if len(node.input) > 2 and node.input[2]:
            if ref.op == "Conv" and node.input[2] in self.inits:
                self.use(node.input[2], 0, out)  # Conv's bias is [C_out], not broadcast
            else:
                self._constant(node.input[2], out)
        self.carried[node.output[0]] = out

    def _read_channels(
        self, name: str, axis: int, source: Carried, op: str, weight_rank: int
    ) -> None:
        """``name`` contracts ``source``'s channels along its ``axis`` (or freezes them)."""
        reads_axis = 1 - weight_rank if op == "Conv" else -1
        if source.axis != reads_axis or (op == "Conv" and source.rank != weight_rank):
            self.freeze(source)
            return
        spatial = 1
        if source.flattened:
            size = self.inits[name].shape[axis]
            if size % source.channels:
                self.freeze(source)
                return
            spatial = size // source.channels
        self.use(name, axis, source, spatial)

    def _pass_through(self, node: onnx.NodeProto, ins: list[Carried | None]) -> None:
        carried = ins[0]
        assert carried is not None
        for other in ins[1:]:
            self.freeze(other)
        pooled = node.op_type.endswith("Pool")
        if pooled and (carried.rank is None or carried.axis != 1 - carried.rank):
            self.freeze(carried)
            return
        self.carried[node.output[0]] = replace(carried, producer=None)

    def _batch_norm(self, node: onnx.NodeProto, carried: Carried) -> None:
        params = list(node.input[1:5])
        shapes_fit = all(
            p in self.inits
            and p not in self.constants
            and self.inits[p].shape == (carried.channels,)
            for p in params
        )
        if (
            len(params) != 4
            or not shapes_fit
            or carried.flattened
            or carried.rank is None
            or carried.axis != 1 - carried.rank
        ):
            self.freeze(carried)
            return
        for param in params:
            self.use(param, 0, carried)
        if carried.producer is not None:
            gamma, var = self.inits[params[0]], self.inits[params[3]]
            epsilon = attr_float(node, "epsilon", BN_EPSILON)
            scale = np.abs(gamma.astype(np.float64)) / np.sqrt(var.astype(np.float64) + epsilon)
            self.scales[carried.producer] = scale
        self.carried[node.output[0]] = replace(carried, producer=None)

    def _constant(self, name: str, carried: Carried) -> bool:
        """Slices a per-channel constant; False (and frozen) where its shape does not fit."""
        if name not in self.inits:
            self.freeze(carried)
            return False
        shape = self.inits[name].shape
        axis = len(shape) + carried.axis
        if carried.rank is not None and len(shape) > carried.rank:
            self.freeze(carried)
            return False
        if axis < 0 or shape[axis] == 1:
            return True  # broadcast along the channels: nothing to slice
        if shape[axis] != carried.channels or carried.flattened or name in self.constants:
            self.freeze(carried)
            return False
        self.use(name, axis, carried)
        return True

    def _binary(self, node: onnx.NodeProto, ins: list[Carried | None]) -> None:
        a, b = ins
        if a is not None and b is not None:
            sizes_a, sizes_b = [s.size for s in a.layout], [s.size for s in b.layout]
            if sizes_a != sizes_b or a.axis != b.axis or a.flattened != b.flattened:
                self.freeze(a)
                self.freeze(b)
                return
            for seg_a, seg_b in zip(a.layout, b.layout, strict=True):
                self.merge(seg_a.group, seg_b.group)
            rank = a.rank if a.rank is not None else b.rank
            self.carried[node.output[0]] = replace(a, rank=rank, producer=None)
            return
        carried = a if a is not None else b
        assert carried is not None
        other = node.input[1] if a is not None else node.input[0]
        if self._constant(other, carried):
            # A bias added after a MatMul still belongs to the raw output (for BN scales).
            keep = carried.producer if node.op_type == "Add" else None
            self.carried[node.output[0]] = replace(carried, producer=keep)

    def _concat(self, node: onnx.NodeProto, ins: list[Carried | None]) -> None:
        parts = [c for c in ins if c is not None]
        first = parts[0]
        axis = attr_int(node, "axis", 0)
        if axis >= 0 and first.rank is not None:
            axis -= first.rank
        fits = (
            len(parts) == len(ins)
            and all(c.axis == first.axis and not c.flattened for c in parts)
            and axis == first.axis
        )
        if not fits:
            for carried in ins:
                self.freeze(carried)
            return
        layout = tuple(seg for c in parts for seg in c.layout)
        self.carried[node.output[0]] = replace(first, layout=layout, producer=None)

    def _flatten(self, node: onnx.NodeProto, carried: Carried) -> None:
        axis = attr_int(node, "axis", 1)
        if carried.rank is None or axis != 1 or carried.axis != 1 - carried.rank:
            self.freeze(carried)
            return
        flattened = carried.rank > 2 or carried.flattened
        self.carried[node.output[0]] = Carried(carried.layout, -1, 2, flattened)

    def importance(self, weights: list[str]) -> npt.NDArray[np.float64]:
        """Per channel: each producer's L1 norm times its BatchNorm scale, mean-normalised."""
        total: npt.NDArray[np.float64] | None = None
        for name in weights:
            w = self.inits[name]
            out_axis = self.out_axis[name]
            norms = np.abs(np.moveaxis(w, out_axis, 0)).reshape(w.shape[out_axis], -1).sum(1)
            norms = norms.astype(np.float64) * self.scales.get(name, 1.0)
            norms = norms / (float(norms.mean()) or 1.0)
            total = norms if total is None else total + norms
        assert total is not None
        return total


def analyse(model: onnx.ModelProto) -> Dependencies:
    walker = _Walker(model)
    walker.walk(model)
    roots: dict[int, list[str]] = {}
    for group, weights in walker.producers.items():
        roots.setdefault(walker.find(group), []).extend(weights)
    frozen_roots = {walker.find(g) for g in walker.frozen}
    groups = {
        root: ChannelGroup(tuple(weights), walker.importance(weights))
        for root, weights in roots.items()
        if root not in frozen_roots
    }
    return Dependencies(
        groups,
        len(frozen_roots),
        list(walker.uses.values()),
        {g: walker.find(g) for g in range(len(walker.parent))},
    )


def plan_slices(model: onnx.ModelProto, sparsity: float) -> tuple[Slices, dict[str, int]]:
    """Kept indices per initializer and axis, removing ``sparsity`` of every free group."""
    deps = analyse(model)
    keep = {root: keep_top(group.importance, sparsity) for root, group in deps.groups.items()}
    slices: dict[str, list[tuple[int, Indices]]] = {}
    for use in deps.uses:
        parts, offset = [], 0
        for seg in use.layout:
            root = deps.root[seg.group]
            kept = keep[root] if root in keep else np.arange(seg.size, dtype=np.int64)
            parts.append(kept + offset)
            offset += seg.size
        indices = np.concatenate(parts)
        if use.spatial > 1:
            indices = expand_flattened(indices, use.spatial)
        if len(indices) < offset * use.spatial:
            slices.setdefault(use.name, []).append((use.axis, indices))
    summary = {
        "groups": len(deps.groups),
        "coupledGroups": sum(1 for g in deps.groups.values() if len(g.producers) > 1),
        "frozenGroups": deps.frozen,
        "channelsBefore": sum(g.channels for g in deps.groups.values()),
        "channelsAfter": sum(len(k) for k in keep.values()),
    }
    return {name: tuple(axes) for name, axes in slices.items()}, summary

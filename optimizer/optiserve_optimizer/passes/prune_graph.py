"""Finding what to prune in an ONNX graph: weight tensors and producer→consumer channel chains.

The same findings drive both back-ends: ONNX initializers are edited directly, and for
TorchScript sources the exported initializer names are the module's parameter names, so the
same slices are applied to the trainable module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnx

# Ops that keep the channel axis as it is (elementwise or per-channel pooling).
CHANNEL_PRESERVING = {
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Elu",
    "Selu",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "MaxPool",
    "AveragePool",
    "Dropout",
    "Identity",
    "Softplus",
    "Mish",
}


@dataclass(frozen=True)
class WeightRef:
    node: str
    op: str
    name: str  # initializer name
    input_axis: int
    output_axis: int


@dataclass(frozen=True)
class Chain:
    """``producer``'s output channels feed ``consumer``'s input axis (maybe through Flatten)."""

    producer: WeightRef
    producer_bias: str | None
    consumer: WeightRef
    flattened: bool  # a Flatten sits between a Conv and a Gemm/MatMul


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def weight_ref(node: onnx.NodeProto, inits: dict[str, npt.NDArray[np.generic]]) -> WeightRef | None:
    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    rank = inits[node.input[1]].ndim
    if node.op_type == "Conv" and _attr(node, "group", 1) == 1 and rank >= 3:
        return WeightRef(node.name, "Conv", node.input[1], 1, 0)
    if node.op_type == "Gemm" and rank == 2:
        trans_b = _attr(node, "transB", 0)
        return WeightRef(node.name, "Gemm", node.input[1], 1 if trans_b else 0, 0 if trans_b else 1)
    if node.op_type == "MatMul" and rank == 2:
        return WeightRef(node.name, "MatMul", node.input[1], 0, 1)
    return None


def initializers(model: onnx.ModelProto) -> dict[str, npt.NDArray[np.generic]]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def weight_refs(model: onnx.ModelProto) -> list[WeightRef]:
    inits = initializers(model)
    refs = [weight_ref(n, inits) for n in model.graph.node]
    return [r for r in refs if r is not None and np.issubdtype(inits[r.name].dtype, np.floating)]


def chains(model: onnx.ModelProto) -> list[Chain]:
    """Producer→consumer pairs whose channels can be removed without touching anything else."""
    inits = initializers(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    found: list[Chain] = []
    for node in model.graph.node:
        producer = weight_ref(node, inits)
        if producer is None:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
        tensor, flattened = node.output[0], False
        while tensor not in outputs and len(consumers.get(tensor, [])) == 1:
            nxt = consumers[tensor][0]
            if nxt.op_type in CHANNEL_PRESERVING and nxt.input[0] == tensor:
                tensor = nxt.output[0]
                continue
            if (
                nxt.op_type == "Add"
                and producer.op == "MatMul"
                and bias is None
                and any(i in inits and inits[i].ndim == 1 for i in nxt.input)
            ):
                bias = next(i for i in nxt.input if i in inits)
                tensor = nxt.output[0]
                continue
            if nxt.op_type == "Flatten" and producer.op == "Conv" and _attr(nxt, "axis", 1) == 1:
                tensor, flattened = nxt.output[0], True
                continue
            consumer = weight_ref(nxt, inits)
            if consumer is not None and nxt.input[0] == tensor:
                found.append(Chain(producer, bias, consumer, flattened))
            break
    return found

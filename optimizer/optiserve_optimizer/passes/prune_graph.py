"""Finding what to prune in an ONNX graph: the weight tensors of Conv/Gemm/MatMul layers.

The channel dependencies between layers (BatchNorm, residual adds, concatenations) are found by
``prune_deps``. Both back-ends use these findings: ONNX initializers are edited directly, and for
TorchScript sources the exported initializer names are the module's parameter and buffer
names, so the same slices are applied to the trainable module.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class WeightRef:
    node: str
    op: str
    name: str  # initializer name
    input_axis: int
    output_axis: int


def attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def attr_float(node: onnx.NodeProto, name: str, default: float) -> float:
    for attr in node.attribute:
        if attr.name == name:
            return float(attr.f)
    return default


def attr_ints(node: onnx.NodeProto, name: str) -> list[int]:
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints)
    return []


def constant_nodes(model: onnx.ModelProto) -> dict[str, npt.NDArray[np.generic]]:
    """Values of the Constant nodes (torch exports scalars so), by output name."""
    from onnx import numpy_helper

    values = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def weight_ref(node: onnx.NodeProto, inits: dict[str, npt.NDArray[np.generic]]) -> WeightRef | None:
    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    rank = inits[node.input[1]].ndim
    if node.op_type == "Conv" and attr_int(node, "group", 1) == 1 and rank >= 3:
        return WeightRef(node.name, "Conv", node.input[1], 1, 0)
    if node.op_type == "Gemm" and rank == 2 and attr_int(node, "transA", 0) == 0:
        trans_b = attr_int(node, "transB", 0)
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


def materialize_identities(model: onnx.ModelProto) -> int:
    """Gives every ``Identity(initializer)`` output its own initializer; returns how many.

    torch's exporter stores equal tensors once (a fresh BatchNorm's ones and zeros, say) and
    names the copies through Identity nodes. Pruning slices each copy with its own layer's
    channels, so the copies must become separate tensors again, under the names the TorchScript
    module knows them by.
    """
    from onnx import numpy_helper

    by_name = {i.name: i for i in model.graph.initializer}
    kept, added = [], 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in by_name:
            array = numpy_helper.to_array(by_name[node.input[0]])
            model.graph.initializer.append(numpy_helper.from_array(array.copy(), node.output[0]))
            added += 1
        else:
            kept.append(node)
    if added:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        used = Counter(name for node in kept for name in node.input)
        outputs = {o.name for o in model.graph.output}
        unused = [i for i in model.graph.initializer if not used[i.name] and i.name not in outputs]
        for init in unused:
            model.graph.initializer.remove(init)
    return added

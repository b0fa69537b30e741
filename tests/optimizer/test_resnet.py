"""ResNet-18 (torchvision's, BatchNorm and residual joins) pruned, recovered and quantized."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest

from tests.optimizer.runs import OptimizerRunner

pytestmark = pytest.mark.models

MAX_DROP = 0.03


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch

    from optiserve_optimizer.models.resnet import make_resnet18

    torch.set_num_threads(1)
    return make_resnet18(tmp_path_factory.mktemp("resnet18"), size=32, epochs=3)


def test_resnet18_pruned_recovered_and_quantized_passes_its_gate(
    resnet_files: Any, optimizer: OptimizerRunner
) -> None:
    report = optimizer.optimize(
        "resnet18",
        {"uri": str(resnet_files.model), "format": "torchscript"},
        {
            "pruning": {"method": "structured", "sparsity": 0.5},
            "recovery": {"method": "distill", "epochs": 2},
            "quantization": {
                "precision": "int8",
                "method": "static",
                "calibration": {"uri": str(resnet_files.train), "samples": 64},
            },
            "accuracy": {"dataset": str(resnet_files.eval), "metric": "top1", "maxDrop": MAX_DROP},
            "benchmark": {"batchSizes": [1, 32], "iterations": 5, "warmup": 1},
        },
    ).report
    print(json.dumps(report, indent=1))  # the numbers, for whoever reads the test log
    candidates = {c["name"]: c for c in report["candidates"]}
    details = report["candidateDetails"]["pruned-structured+int8-static"]["passes"]
    prune = details["prune"]
    assert prune["groups"] == 12 and prune["coupledGroups"] == 4  # 4 residual stages
    assert prune["paramsAfter"] < 0.3 * prune["paramsBefore"]  # channels really removed
    assert details["recover"]["lossLast"] < details["recover"]["lossFirst"]
    types = details["quantize"]["int8Types"]
    assert types["chosen"] in {t["types"] for t in types["trials"] if t["matches"]}
    for name in ("pruned-structured", "pruned-structured+int8-static"):
        assert candidates[name]["passed"], candidates[name]
        assert candidates[name]["accuracyDrop"] <= MAX_DROP
    assert (
        candidates["pruned-structured+int8-static"]["sizeBytes"]
        < 0.1 * (candidates["fp32"]["sizeBytes"])
    )
    chosen = next(c for c in report["candidates"] if c["chosen"])
    assert chosen["passed"]


def test_the_pruned_resnet18_has_no_batchnorm_left_to_run(
    resnet_files: Any, tmp_path: Path
) -> None:
    """BatchNorm is pruned with its conv for training, then folded into it for serving."""
    from optiserve.api import OptimizationSpec, SourceSpec
    from optiserve_optimizer.artifact import PassContext
    from optiserve_optimizer.passes.graph_opt import GraphOpt
    from optiserve_optimizer.passes.load_export import LoadExport
    from optiserve_optimizer.passes.pruning import Prune
    from optiserve_optimizer.progress import Progress

    spec = OptimizationSpec.model_validate({"accuracy": {"dataset": str(resnet_files.eval)}})
    source = SourceSpec(uri=str(resnet_files.model), format="torchscript")
    ctx = PassContext(source, spec, tmp_path, Progress())
    original = LoadExport().run(None, {}, ctx).artifact
    ctx.step_label = "prune"
    pruned = Prune().run(original, {"method": "structured", "sparsity": 0.5}, ctx).artifact
    ctx.step_label = "graph_opt"
    served = GraphOpt().run(pruned, {"level": "basic"}, ctx).artifact
    ops = {n.op_type for n in onnx.load(str(served.onnx)).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    widths = {i.name: tuple(i.dims) for i in onnx.load(str(pruned.onnx)).graph.initializer}
    assert widths["layer1.0.conv1.weight"] == (32, 32, 3, 3)
    assert widths["layer4.1.conv2.weight"] == (256, 256, 3, 3)
    assert widths["fc.weight"] == (10, 256)

"""Step name → pass. Imports of the passes (and so of numpy/onnx helpers) happen on first use."""

from __future__ import annotations

from typing import Any

from optiserve_optimizer import plan


def pass_for(step_name: str) -> Any:
    if step_name == plan.LOAD_EXPORT:
        from optiserve_optimizer.passes.load_export import LoadExport

        return LoadExport()
    if step_name == plan.GRAPH_OPT:
        from optiserve_optimizer.passes.graph_opt import GraphOpt

        return GraphOpt()
    if step_name == plan.STUDENT:
        from optiserve_optimizer.passes.student import Student

        return Student()
    if step_name == plan.PRUNE:
        from optiserve_optimizer.passes.pruning import Prune

        return Prune()
    if step_name == plan.RECOVER:
        from optiserve_optimizer.passes.recovery import Recover

        return Recover()
    if step_name == plan.QUANTIZE:
        from optiserve_optimizer.passes.quantize import Quantize

        return Quantize()
    if step_name == plan.SHAPES:
        from optiserve_optimizer.passes.shapes import Shapes

        return Shapes()
    if step_name == plan.TENSORRT:
        from optiserve_optimizer.passes.tensorrt_build import TensorRTBuild

        return TensorRTBuild()
    if step_name == plan.PRUNE_TRANSFORMER:
        from optiserve_optimizer.passes.hf_compress import PruneTransformer

        return PruneTransformer()
    if step_name == plan.DROP_LAYERS:
        from optiserve_optimizer.passes.hf_compress import DropLayers

        return DropLayers()
    if step_name == plan.DISTILL:
        from optiserve_optimizer.passes.hf_compress import Distill

        return Distill()
    raise KeyError(f"no pass named {step_name!r}")

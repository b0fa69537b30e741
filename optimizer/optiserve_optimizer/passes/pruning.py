"""Pruning: magnitude (unstructured), structured (channels removed) and 2:4 semi-structured."""

from __future__ import annotations

from typing import Any

import numpy as np

from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import PassFailedError
from optiserve_optimizer.onnx_utils import load_model
from optiserve_optimizer.passes import prune_deps, prune_graph, prune_math, torch_edit
from optiserve_optimizer.passes.torch_edit import Edit
from optiserve_optimizer.settings import PassConfig, PruneSettings

NAME = "prune"


def _magnitude_mask(weights: Any, sparsity: float, use_torch: bool) -> Any:
    if not use_torch:
        return prune_math.magnitude_mask(weights, sparsity)
    # torch.nn.utils.prune's own L1 criterion; applied by multiplication, which is what
    # prune.remove() makes permanent (ScriptModules cannot hold prune's forward hooks).
    import torch
    from torch.nn.utils import prune

    tensor = torch.from_numpy(np.ascontiguousarray(weights))
    method: Any = prune.L1Unstructured(amount=sparsity)
    mask = method.compute_mask(tensor, torch.ones_like(tensor))
    return mask.numpy().astype(bool)


def plan_edits(
    model: Any, method: str, sparsity: float, use_torch: bool
) -> tuple[dict[str, Edit], dict[str, Any]]:
    """What to change, by initializer name, and a summary for the report."""
    inits = prune_graph.initializers(model)
    edits: dict[str, Edit] = {}
    skipped: list[str] = []
    if method == "structured":
        # In place: the ONNX back-end then edits the same (de-duplicated) initializers.
        prune_graph.materialize_identities(model)
        slices, summary = prune_deps.plan_slices(model, sparsity)
        if not slices:
            raise PassFailedError(
                NAME,
                "structured pruning found no channel chain (a Conv/Gemm/MatMul whose output "
                "channels reach another Conv/Gemm/MatMul through BatchNorm, activations, pools, "
                "residual adds, concatenations or Flatten) in this model",
            )
        edits = {name: ("slice", axes) for name, axes in slices.items()}
        weight_names = {r.name for r in prune_graph.weight_refs(model)}
        layers = sum(1 for name in edits if name in weight_names)
        return edits, {"layers": layers, "tensorsSliced": len(edits), **summary}
    for ref in prune_graph.weight_refs(model):
        weights = inits[ref.name]
        if method == "2:4":
            if not prune_math.supports_two_four(weights, ref.input_axis):
                skipped.append(ref.name)
                continue
            edits[ref.name] = ("mask", prune_math.two_four_mask(weights, ref.input_axis))
        else:
            edits[ref.name] = ("mask", _magnitude_mask(weights, sparsity, use_torch))
    if not edits:
        raise PassFailedError(NAME, f"no Conv/Gemm/MatMul weight can be pruned with {method}")
    return edits, {"layers": len(edits), "skipped": skipped}


def sparsity_of(model: Any) -> float:
    inits = prune_graph.initializers(model)
    refs = prune_graph.weight_refs(model)
    total = sum(inits[r.name].size for r in refs)
    zeros = sum(int((inits[r.name] == 0).sum()) for r in refs)
    return zeros / total if total else 0.0


class Prune:
    name = NAME
    settings_type = PruneSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        import onnx

        settings = PruneSettings.of(config, NAME)
        method, sparsity = settings.method, settings.sparsity
        model = load_model(artifact.onnx, NAME)
        params_before = sum(v.size for v in prune_graph.initializers(model).values())
        edits, summary = plan_edits(model, method, sparsity, artifact.torchscript is not None)
        onnx_out = ctx.output(artifact, f"pruned-{method.replace(':', '')}.onnx")
        torch_out = None
        if artifact.torchscript is not None:
            module = torch_edit_module(artifact.torchscript)
            torch_edit.apply_edits(module, edits, NAME)
            torch_out = onnx_out.with_suffix(".pt")
            names = [i.name for i in model.graph.input]
            feed = ctx.sample_feed(names, rows=2)
            torch_edit.save_and_export(module, torch_out, onnx_out, feed, NAME)
        else:
            torch_edit.apply_edits_onnx(model, edits)
            onnx.save(model, str(onnx_out))
        pruned = load_model(onnx_out, NAME)
        params_after = sum(v.size for v in prune_graph.initializers(pruned).values())
        metrics = {
            "method": method,
            **summary,
            "paramsBefore": params_before,
            "paramsAfter": params_after,
            "zeroFraction": round(sparsity_of(pruned), 4),
            "bytes": onnx_out.stat().st_size,
        }
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, onnx=onnx_out, torch=torch_out), metrics
        )


def torch_edit_module(path: Any) -> Any:
    from optiserve_optimizer.passes.torch_export import load_torchscript

    return load_torchscript(path, NAME)

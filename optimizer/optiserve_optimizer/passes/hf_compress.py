"""Compression of huggingface encoders, each step physically smaller: attention heads and FFN
neurons pruned by importance on the user's data, layers dropped (a shallow student), then
distillation on the teacher's outputs. Each pass writes a new twin and an ONNX export checked on
a padded batch (``hf_source.export_checked``), so every later step (graph optimization, INT8)
and the gate see the smaller model.

Importance is measured, not assumed: over real tokens of the calibration data, a head's score is
the mean norm of what it adds to the residual stream (its context vectors through its slice of
the output projection), an FFN neuron's the mean |activation| times the norm of its output
weights. The lowest-scoring share of each layer goes, the same count in every layer so the
shapes stay regular (which is what makes the matrix products faster).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from optiserve.uri import local_path
from optiserve_optimizer import data
from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import PassFailedError
from optiserve_optimizer.onnx_utils import threads
from optiserve_optimizer.passes import hf_model, hf_source
from optiserve_optimizer.settings import (
    DistillSettings,
    DropLayersSettings,
    PassConfig,
    PruneTransformerSettings,
)

PRUNE_NAME = "prune_transformer"
LAYERS_NAME = "drop_layers"
DISTILL_NAME = "distill"
BATCH = 32


def _twin(artifact: ModelArtifact, pass_name: str) -> Path:
    if not hf_model.is_twin(artifact.torch):
        raise PassFailedError(
            pass_name,
            "transformer compression needs a huggingface source (source.format: huggingface); "
            "this model has no transformer twin to edit",
        )
    assert artifact.torch is not None
    return artifact.torch


def _batches(path: Path, names: list[str], limit: int | None) -> Iterator[dict[str, Any]]:
    """Streamed batches, cut to their longest real sequence: positions that are padding in
    every row change no output (the mask hides them), so computing them is waste."""
    import torch

    for batch in data.iter_batches(path, names, BATCH, limit):
        longest = max(1, int(np.asarray(batch["attention_mask"]).sum(axis=1).max()))
        yield {n: torch.from_numpy(np.array(batch[n][:, :longest])) for n in names}


def _dataset(config_uri: str, names: list[str], pass_name: str) -> Path:
    path = local_path(config_uri)
    members = data.describe(path, pass_name)
    missing = [n for n in names if n not in members]
    if missing:
        raise PassFailedError(pass_name, f"{path.name} lacks the model inputs {missing}")
    return path


def importance(module: Any, path: Path, limit: int) -> tuple[list[Any], list[Any]]:
    """Per layer: head scores [heads] and FFN neuron scores [neurons] over ``limit`` samples."""
    import torch

    parts = hf_model.layer_parts(module.model)
    heads = [torch.zeros(p.heads, dtype=torch.float64) for p in parts]
    neurons = [torch.zeros(p.ffn, dtype=torch.float64) for p in parts]
    real: dict[str, Any] = {}

    def on_attention_output(i: int) -> Any:
        weight = parts[i].get(3).weight.detach()  # [hidden, heads * size]
        size = parts[i].head_size
        per_head = weight.reshape(weight.shape[0], -1, size)  # [hidden, heads, size]

        def hook(_module: Any, args: tuple[Any, ...]) -> None:
            context = args[0].reshape(*args[0].shape[:2], -1, size)  # [b, s, heads, size]
            added = torch.einsum("bsnk,dnk->bsnd", context, per_head).norm(dim=-1)
            heads[i] += (added * real["mask"].unsqueeze(-1)).sum(dim=(0, 1)).double()

        return hook

    def on_ffn_output(i: int) -> Any:
        out_norm = parts[i].get(5).weight.detach().norm(dim=0)  # [neurons]

        def hook(_module: Any, args: tuple[Any, ...]) -> None:
            act = args[0].abs() * real["mask"].unsqueeze(-1)
            neurons[i] += (act.sum(dim=(0, 1)) * out_norm).double()

        return hook

    handles = []
    for i, p in enumerate(parts):
        handles.append(p.get(3).register_forward_pre_hook(on_attention_output(i)))
        handles.append(p.get(5).register_forward_pre_hook(on_ffn_output(i)))
    try:
        with torch.no_grad():
            for batch in _batches(path, module.input_names, limit):
                real["mask"] = batch["attention_mask"].to(torch.float32)
                module(*[batch[n] for n in module.input_names])
    finally:
        for handle in handles:
            handle.remove()
    return heads, neurons


def _top(scores: Any, keep: int) -> list[int]:
    return sorted(int(i) for i in scores.argsort(descending=True)[:keep])


def prune_by_importance(
    module: Any, config: PruneTransformerSettings, path: Path
) -> dict[str, Any]:
    """Removes the lowest-importance heads and neurons of every layer in place."""
    head_scores, neuron_scores = importance(module, path, config.samples)
    parts = hf_model.layer_parts(module.model)
    before = (parts[0].heads, parts[0].ffn)
    for p, hs, ns in zip(parts, head_scores, neuron_scores, strict=True):
        keep_heads = max(1, round(p.heads * (1.0 - config.heads)))
        keep_neurons = max(1, round(p.ffn * (1.0 - config.ffn)))
        hf_model.shrink_layer(p, _top(hs, keep_heads), _top(ns, keep_neurons))
    return {"heads": f"{before[0]}->{parts[0].heads}", "ffn": f"{before[1]}->{parts[0].ffn}"}


def kept_layers(total: int, keep: int) -> list[int]:
    """``keep`` evenly spaced layers of ``total``, the first and the last included."""
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def _finish(
    module: Any,
    artifact: ModelArtifact,
    ctx: PassContext,
    pass_name: str,
    metrics: dict[str, Any],
    params_before: int,
) -> PassResult:
    onnx_out = ctx.output(artifact, f"{pass_name}.onnx")
    feed = hf_source.padded_batch(
        data.load(local_path(ctx.spec.accuracy.dataset), module.input_names, hf_source.CHECK_ROWS),
        hf_source.pad_id(module.model.config),
    )
    weights, checked = hf_source.export_checked(
        module, feed, onnx_out, onnx_out.with_suffix(".twin"), pass_name
    )
    return PassResult(
        artifact.evolve(ctx.step_label or pass_name, onnx=onnx_out, torch=weights),
        {
            **metrics,
            "paramsBefore": params_before,
            "paramsAfter": hf_model.parameter_count(module),
            "bytes": weights.stat().st_size,
            **checked,
        },
    )


class PruneTransformer:
    name = PRUNE_NAME
    settings_type = PruneTransformerSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        import torch

        settings = PruneTransformerSettings.of(config, PRUNE_NAME)
        torch.set_num_threads(threads())
        module = hf_model.load_twin(_twin(artifact, PRUNE_NAME), PRUNE_NAME)
        path = _dataset(settings.dataset, module.input_names, PRUNE_NAME)
        before = hf_model.parameter_count(module)
        summary = prune_by_importance(module, settings, path)
        return _finish(module, artifact, ctx, PRUNE_NAME, summary, before)


class DropLayers:
    name = LAYERS_NAME
    settings_type = DropLayersSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        settings = DropLayersSettings.of(config, LAYERS_NAME)
        module = hf_model.load_twin(_twin(artifact, LAYERS_NAME), LAYERS_NAME)
        total = len(hf_model.encoder_layers(module.model))
        keep = settings.layers or max(1, total // 2)
        if not 1 <= keep < total:
            raise PassFailedError(
                LAYERS_NAME,
                f"a shallow student keeps 1 to {total - 1} of {total} layers, not {keep}",
            )
        before = hf_model.parameter_count(module)
        kept = kept_layers(total, keep)
        hf_model.keep_layers(module.model, kept)
        metrics = {"layers": f"{total}->{len(kept)}", "kept": kept}
        return _finish(module, artifact, ctx, LAYERS_NAME, metrics, before)


def distill_loss(task: str, student: Any, teacher: Any, mask: Any, temperature: float) -> Any:
    """Embeddings: 1 - cosine; logits: KL on temperature-softened outputs (real tokens only)."""
    import torch

    functional = torch.nn.functional
    if task == hf_model.FEATURE_EXTRACTION:
        return (1.0 - functional.cosine_similarity(student, teacher, dim=-1)).mean()
    log_p = functional.log_softmax(student / temperature, dim=-1)
    q = functional.softmax(teacher / temperature, dim=-1)
    per_item = functional.kl_div(log_p, q, reduction="none").sum(dim=-1)
    if per_item.dim() == 2:  # tokens: padding carries no answer
        weights = mask.to(per_item.dtype)
        return (per_item * weights).sum() / weights.sum().clamp(min=1.0) * temperature**2
    return per_item.mean() * temperature**2


class Distill:
    name = DISTILL_NAME
    settings_type = DistillSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        import torch

        settings = DistillSettings.of(config, DISTILL_NAME)
        if ctx.original is None:
            raise PassFailedError(DISTILL_NAME, "distillation needs the original model (teacher)")
        teacher = hf_model.load_twin(_twin(ctx.original, DISTILL_NAME), DISTILL_NAME)
        student = hf_model.load_twin(_twin(artifact, DISTILL_NAME), DISTILL_NAME)
        path = _dataset(settings.dataset, student.input_names, DISTILL_NAME)
        torch.set_num_threads(threads())
        torch.manual_seed(0)
        # The embedding tables (most of a small encoder's weights) stay the teacher's: training
        # them on a calibration-sized set overfits, and their optimizer state costs the most.
        for param in student.model.base_model.embeddings.parameters():
            param.requires_grad_(False)
        trainable = [p for p in student.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
        losses: list[float] = []
        targets: list[Any] = []  # the teacher's outputs, computed once (batches come in order)
        student.train()
        for _ in range(settings.epochs):
            total, count = 0.0, 0
            for index, batch in enumerate(_batches(path, student.input_names, None)):
                inputs = [batch[n] for n in student.input_names]
                if index == len(targets):
                    with torch.no_grad():
                        targets.append(teacher(*inputs))
                target = targets[index]
                loss = distill_loss(
                    student.task,
                    student(*inputs),
                    target,
                    batch["attention_mask"],
                    settings.temperature,
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.item()) * len(inputs[0])
                count += len(inputs[0])
            losses.append(total / max(count, 1))
        student.eval()
        metrics = {"epochs": len(losses), "lossFirst": losses[0], "lossLast": losses[-1]}
        before = hf_model.parameter_count(student)
        return _finish(student, artifact, ctx, DISTILL_NAME, metrics, before)

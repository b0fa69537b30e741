"""Recovery: short fine-tuning of the pruned model, by distillation from the original (teacher).

``distill`` matches the teacher's softened outputs (KL divergence for classifier logits, mean
squared error otherwise); ``finetune`` uses the dataset's hard ``labels``. Weights that pruning
set to zero (magnitude, 2:4) are held at zero after every step so the sparsity survives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from optiserve.uri import local_path
from optiserve_optimizer import data
from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import DataError, PassFailedError
from optiserve_optimizer.onnx_utils import signature, threads
from optiserve_optimizer.passes import torch_edit
from optiserve_optimizer.passes.torch_export import call, load_torchscript
from optiserve_optimizer.settings import PassConfig, RecoverSettings

NAME = "recover"
BATCH = 64


class Recover:
    name = NAME
    settings_type = RecoverSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        import onnx
        import torch

        settings = RecoverSettings.of(config, NAME)
        if artifact.torchscript is None or ctx.original is None or ctx.original.torchscript is None:
            raise PassFailedError(NAME, "recovery needs a TorchScript source (a trainable module)")
        torch.set_num_threads(threads())
        torch.manual_seed(0)
        model = onnx.load(str(artifact.onnx))
        names = [t.name for t in signature(model).inputs]
        path = local_path(settings.dataset)
        data.check_against(path, signature(model).inputs, NAME)
        method = settings.method
        arrays = data.load(path, [*names, data.LABELS])
        if method == "finetune" and data.LABELS not in arrays:
            raise DataError(NAME, f"finetune needs 'labels' in {path.name}; use method: distill")
        teacher = load_torchscript(ctx.original.torchscript, NAME)
        student = load_torchscript(artifact.torchscript, NAME)
        zero_masks = _zero_masks(student) if settings.keep_zeros else {}
        classifier = ctx.spec.accuracy.metric == "top1"
        loss_kind = "finetune" if method == "finetune" else ("kl" if classifier else "mse")
        losses = train(
            teacher,
            student,
            arrays,
            names,
            epochs=settings.epochs,
            learning_rate=settings.learning_rate,
            loss_kind=loss_kind,
            temperature=settings.temperature,
            zero_masks=zero_masks,
        )
        onnx_out = ctx.output(artifact, "recovered.onnx")
        torch_out = onnx_out.with_suffix(".pt")
        feed = {n: arrays[n][:2] for n in names}
        torch_edit.save_and_export(student, torch_out, onnx_out, feed, NAME)
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, onnx=onnx_out, torch=torch_out),
            {
                "method": method,
                "epochs": len(losses),
                "lossFirst": losses[0],
                "lossLast": losses[-1],
            },
        )


def train(
    teacher: Any,
    student: Any,
    arrays: Mapping[str, Any],
    names: list[str],
    *,
    epochs: int,
    learning_rate: float,
    loss_kind: str,
    temperature: float,
    zero_masks: Mapping[str, Any] | None = None,
) -> list[float]:
    """Trains ``student`` to imitate ``teacher`` in place; returns the mean loss of each epoch.

    ``loss_kind``: ``kl`` (temperature-softened classifier outputs), ``mse`` (any outputs) or
    ``finetune`` (cross entropy on the dataset's ``labels``). Weights under ``zero_masks`` are
    held at zero after every step.
    """
    import torch

    optimizer = torch.optim.Adam(student.parameters(), lr=learning_rate)
    count = len(arrays[names[0]])
    losses: list[float] = []
    student.train()
    for _ in range(epochs):
        order = np.random.default_rng(len(losses)).permutation(count)
        total = 0.0
        for start in range(0, count, BATCH):
            idx = order[start : start + BATCH]
            feed = {n: torch.from_numpy(arrays[n][idx]) for n in names}  # bound by name
            with torch.no_grad():
                target = call(teacher, feed)
            output = call(student, feed)
            if loss_kind == "finetune":
                loss = torch.nn.functional.cross_entropy(
                    output, torch.from_numpy(arrays[data.LABELS][idx])
                )
            elif loss_kind == "kl":
                loss = (
                    torch.nn.functional.kl_div(
                        torch.log_softmax(output / temperature, dim=-1),
                        torch.softmax(target / temperature, dim=-1),
                        reduction="batchmean",
                    )
                    * temperature**2
                )
            else:
                loss = torch.nn.functional.mse_loss(output, target)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            with torch.no_grad():
                params = dict(student.named_parameters())
                for param_name, keep in (zero_masks or {}).items():
                    params[param_name].mul_(keep)
            total += loss.item() * len(idx)
        losses.append(total / count)
    student.eval()
    return losses


def _zero_masks(module: Any) -> dict[str, Any]:
    """Masks of the weight matrices that hold zeros (what pruning removed)."""
    masks = {}
    for name, param in module.named_parameters():
        if param.dim() >= 2 and bool((param == 0).any()):
            masks[name] = (param != 0).to(param.dtype).detach()
    return masks

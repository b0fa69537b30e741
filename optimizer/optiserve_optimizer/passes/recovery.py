"""Recovery: short fine-tuning of the pruned model, by distillation from the original (teacher).

``distill`` matches the teacher's softened outputs (KL divergence for classifier logits, mean
squared error otherwise); ``finetune`` uses the dataset's hard ``labels``. Weights that pruning
set to zero (magnitude, 2:4) are held at zero after every step so the sparsity survives.

The training set is read ``SHUFFLE_ROWS`` rows at a time and each window is shuffled, so memory
does not grow with the set; a set of up to ``SHUFFLE_ROWS`` rows is shuffled whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
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
SHUFFLE_ROWS = 8192  # rows read and shuffled together


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
        labelled = data.LABELS in data.describe(path, NAME)
        if method == "finetune" and not labelled:
            raise DataError(NAME, f"finetune needs 'labels' in {path.name}; use method: distill")
        teacher = load_torchscript(ctx.original.torchscript, NAME)
        student = load_torchscript(artifact.torchscript, NAME)
        zero_masks = _zero_masks(student) if settings.keep_zeros else {}
        classifier = ctx.spec.accuracy.metric == "top1"
        loss_kind = "finetune" if method == "finetune" else ("kl" if classifier else "mse")
        read = [*names, data.LABELS] if labelled else names
        losses = train(
            teacher,
            student,
            lambda epoch: epoch_batches(path, read, epoch),
            names,
            epochs=settings.epochs,
            learning_rate=settings.learning_rate,
            loss_kind=loss_kind,
            temperature=settings.temperature,
            zero_masks=zero_masks,
        )
        onnx_out = ctx.output(artifact, "recovered.onnx")
        torch_out = onnx_out.with_suffix(".pt")
        feed = data.head(path, names, 2, NAME)
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


def epoch_batches(
    path: Path, names: Sequence[str], epoch: int, batch: int = BATCH, window: int = SHUFFLE_ROWS
) -> Iterator[dict[str, Any]]:
    """One epoch's minibatches: ``window`` rows read at a time, each window in a random order
    (seeded by ``epoch``), cut into ``batch`` rows."""
    rng = np.random.default_rng(epoch)
    for part in data.iter_batches(path, names, window, role=NAME):
        order = rng.permutation(len(part[names[0]]))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            yield {n: np.ascontiguousarray(v[idx]) for n, v in part.items()}


def train(
    teacher: Any,
    student: Any,
    batches: Callable[[int], Iterator[Mapping[str, Any]]],
    names: list[str],
    *,
    epochs: int,
    learning_rate: float,
    loss_kind: str,
    temperature: float,
    zero_masks: Mapping[str, Any] | None = None,
) -> list[float]:
    """Trains ``student`` to imitate ``teacher`` in place; returns the mean loss of each epoch.
    ``batches(epoch)`` gives that epoch's minibatches (``epoch_batches``).

    ``loss_kind``: ``kl`` (temperature-softened classifier outputs), ``mse`` (any outputs) or
    ``finetune`` (cross entropy on the dataset's ``labels``). Weights under ``zero_masks`` are
    held at zero after every step.
    """
    import torch

    optimizer = torch.optim.Adam(student.parameters(), lr=learning_rate)
    losses: list[float] = []
    student.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for rows in batches(epoch):
            feed = {n: torch.from_numpy(rows[n]) for n in names}  # bound by name
            with torch.no_grad():
                target = call(teacher, feed)
            output = call(student, feed)
            if loss_kind == "finetune":
                loss = torch.nn.functional.cross_entropy(
                    output, torch.from_numpy(rows[data.LABELS])
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
            size = len(rows[names[0]])
            total, count = total + loss.item() * size, count + size
        losses.append(total / max(count, 1))
    student.eval()
    return losses


def _zero_masks(module: Any) -> dict[str, Any]:
    """Masks of the weight matrices that hold zeros (what pruning removed)."""
    masks = {}
    for name, param in module.named_parameters():
        if param.dim() >= 2 and bool((param == 0).any()):
            masks[name] = (param != 0).to(param.dtype).detach()
    return masks

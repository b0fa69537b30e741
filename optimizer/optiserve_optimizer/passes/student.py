"""Student: a narrower copy of the teacher, trained on the teacher's softened outputs.

``narrow`` keeps ``round(width * widthFactor)`` channels/neurons of every hidden Conv/Linear
layer (the structured-pruning chains: input and output layers keep their shape), chosen by L1
norm so the student starts from the teacher's most important channels and converges in a few
epochs. It is then distilled from the teacher (KL on temperature-softened logits for classifiers,
mean squared error otherwise) over the dataset, and exported to ONNX like every torch path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from optiserve.uri import local_path
from optiserve_optimizer import data
from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult
from optiserve_optimizer.errors import PassFailedError
from optiserve_optimizer.onnx_utils import load_model, signature, threads
from optiserve_optimizer.passes import prune_graph, pruning, recovery, torch_edit
from optiserve_optimizer.passes.torch_export import call, load_torchscript
from optiserve_optimizer.settings import PassConfig, StudentSettings

NAME = "student"


def agreement(teacher: Any, student: Any, arrays: Mapping[str, Any], names: list[str]) -> float:
    """Fraction of samples where the student's top-1 class is the teacher's."""
    import torch

    count, same = len(arrays[names[0]]), 0
    with torch.no_grad():
        for start in range(0, count, 256):
            feed = {n: torch.from_numpy(arrays[n][start : start + 256]) for n in names}
            top_teacher = call(teacher, feed).argmax(dim=-1)
            same += int((top_teacher == call(student, feed).argmax(dim=-1)).sum())
    return same / count if count else 0.0


class Student:
    name = NAME
    settings_type = StudentSettings

    def run(self, artifact: ModelArtifact, config: PassConfig, ctx: PassContext) -> PassResult:
        import torch

        settings = StudentSettings.of(config, NAME)
        method = settings.method
        if artifact.torchscript is None:
            raise PassFailedError(
                NAME,
                "narrow needs a TorchScript source (a trainable module to narrow and train); "
                "this source is not TorchScript — set source.format: torchscript or "
                "student.method: none",
            )
        factor = settings.width_factor
        torch.set_num_threads(threads())
        torch.manual_seed(0)
        model = load_model(artifact.onnx, NAME)
        inputs = signature(model).inputs
        names = [t.name for t in inputs]
        path = local_path(settings.dataset)
        data.check_against(path, inputs, NAME)
        arrays = data.load(path, names)
        params_before = sum(v.size for v in prune_graph.initializers(model).values())
        # Removing a (1 - factor) share of the channels by L1 norm is structured pruning.
        edits, summary = pruning.plan_edits(model, "structured", 1.0 - factor, use_torch=True)
        hidden_layers = int(summary["groups"])
        teacher = load_torchscript(artifact.torchscript, NAME)
        student = load_torchscript(artifact.torchscript, NAME)
        torch_edit.apply_edits(student, edits, NAME)
        classifier = ctx.spec.accuracy.metric == "top1"
        agreement_before = agreement(teacher, student, arrays, names) if classifier else None
        losses = recovery.train(
            teacher,
            student,
            arrays,
            names,
            epochs=settings.epochs,
            learning_rate=settings.learning_rate,
            loss_kind="kl" if classifier else "mse",
            temperature=settings.temperature,
        )
        onnx_out = ctx.output(artifact, "student-narrow.onnx")
        torch_out = onnx_out.with_suffix(".pt")
        feed = {n: np.ascontiguousarray(arrays[n][:2]) for n in names}
        torch_edit.save_and_export(student, torch_out, onnx_out, feed, NAME)
        params_after = sum(
            v.size for v in prune_graph.initializers(load_model(onnx_out, NAME)).values()
        )
        metrics: dict[str, Any] = {
            "method": method,
            "widthFactor": factor,
            "hiddenLayers": hidden_layers,
            "paramsBefore": int(params_before),
            "paramsAfter": int(params_after),
            "epochs": len(losses),
            "lossFirst": losses[0],
            "lossLast": losses[-1],
            "bytes": onnx_out.stat().st_size,
        }
        if classifier:
            # On the training data: how far training moved the student beyond its initialisation.
            metrics["agreementBefore"] = round(float(agreement_before or 0.0), 4)
            metrics["agreementAfter"] = round(agreement(teacher, student, arrays, names), 4)
        return PassResult(
            artifact.evolve(ctx.step_label or NAME, onnx=onnx_out, torch=torch_out), metrics
        )

"""Load the source model: verify the pin, check every dataset against its inputs, export
TorchScript to ONNX (inputs named and bound as ``forward`` names them) or a torch.export
program (bound as its signature names them, ``program_export``); a huggingface folder is
loaded and exported by ``hf_source``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from optiserve.uri import UnsupportedUriError, local_path
from optiserve_optimizer import data, inputs
from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult, file_sha256
from optiserve_optimizer.errors import DataError, DigestMismatchError, ModelLoadError, short_cause
from optiserve_optimizer.onnx_utils import check_export, load_model, signature
from optiserve_optimizer.passes import hf_source, program_export, torch_export
from optiserve_optimizer.plan import build_plan
from optiserve_optimizer.settings import LoadExportSettings, PassConfig

NAME = "load_export"


class LoadExport:
    name = NAME
    settings_type = LoadExportSettings

    def run(
        self, artifact: ModelArtifact | None, config: PassConfig, ctx: PassContext
    ) -> PassResult:
        LoadExportSettings.of(config, NAME)  # what is loaded comes from ctx.source
        try:
            path = local_path(ctx.source.uri)
        except UnsupportedUriError as exc:
            raise ModelLoadError(NAME, str(exc)) from exc
        if ctx.source.format == "huggingface":
            datasets = inputs.datasets_of(build_plan(ctx.source, ctx.spec), ctx.spec)
            return hf_source.load_export(ctx, NAME, datasets)
        if not path.is_file():
            raise ModelLoadError(NAME, f"model file {path} does not exist")
        digest = file_sha256(path)
        if ctx.source.sha256 and digest != ctx.source.sha256:
            raise DigestMismatchError(
                NAME, f"{path.name} has sha256 {digest}, the spec pins {ctx.source.sha256}"
            )
        datasets = inputs.datasets_of(build_plan(ctx.source, ctx.spec), ctx.spec)
        out = ctx.scratch("original", "model.onnx")
        metrics: dict[str, Any] = {"sha256": digest[:12]}
        if ctx.source.format == "onnx":
            sig = signature(load_model(path, NAME))
            counts = inputs.check_datasets(sig.inputs, [t.name for t in sig.outputs], datasets)
            _record(ctx, [t.name for t in sig.inputs], counts)
            shutil.copyfile(path, out)
            return PassResult(ModelArtifact(onnx=out, history=(NAME,)), metrics)
        if ctx.source.format == "torch-export":
            return _program(ctx, path, datasets, out, metrics)

        module = torch_export.load_torchscript(path, NAME)
        arguments = torch_export.forward_arguments(module)
        names = [a.name for a in arguments]
        optional = [a.name for a in arguments if a.optional]
        eval_set = datasets[0]
        members = data.describe(eval_set.path, eval_set.role)
        data.check_names(members, names, eval_set.path, eval_set.role, optional)
        specs = inputs.torchscript_inputs(names, members)
        if not specs:
            raise DataError(eval_set.role, f"{eval_set.path.name} holds no input arrays")
        arrays = data.load(eval_set.path, [t.name for t in specs], limit=4)
        try:
            outputs = torch_export.torch_outputs(module, {n: v[:2] for n, v in arrays.items()})
        except Exception as exc:  # torch raises RuntimeError, TypeError, ... for a bad feed
            raise inputs.probe_failure(module, members, eval_set.path, short_cause(exc)) from exc
        output_names = torch_export.output_names(len(outputs))
        counts = inputs.check_datasets(specs, output_names, datasets, optional)
        _record(ctx, [t.name for t in specs], counts)
        samples = [{n: v[:2] for n, v in arrays.items()}, {n: v[2:3] for n, v in arrays.items()}]
        torch_export.export_onnx(module, samples[0], out, NAME)
        load_model(out, NAME)
        metrics["maxRelDiff"] = check_export(
            lambda feed: torch_export.torch_outputs(module, feed), out, samples, NAME, "TorchScript"
        )
        torch_copy = ctx.scratch("original", "model.pt")
        shutil.copyfile(path, torch_copy)
        return PassResult(ModelArtifact(onnx=out, torch=torch_copy, history=(NAME,)), metrics)


def _program(
    ctx: PassContext,
    path: Path,
    datasets: list[inputs.Dataset],
    out: Path,
    metrics: dict[str, Any],
) -> PassResult:
    """A torch.export program: bound by its signature, exported by the dynamo exporter,
    checked against itself on eval samples; the ``.pt2`` is the eager baseline's twin."""
    program = program_export.load_program(path, NAME)
    specs = program_export.program_inputs(program, NAME)
    outputs = program_export.output_names(program_export.output_count(program))
    counts = inputs.check_datasets(specs, outputs, datasets)
    _record(ctx, [t.name for t in specs], counts)
    eval_set = datasets[0]
    arrays = data.load(eval_set.path, [t.name for t in specs], limit=5)
    call = program_export.ProgramModule(program)
    try:
        call({n: v[:2] for n, v in arrays.items()})
    except Exception as exc:  # torch raises RuntimeError, ValueError, ... for a bad feed
        raise DataError(
            eval_set.role,
            f"the program fails on {eval_set.path.name}'s first samples: {short_cause(exc)}",
        ) from exc
    program_export.export_onnx(program, specs, {n: v[:2] for n, v in arrays.items()}, out, NAME)
    load_model(out, NAME)
    samples = [{n: v[:4] for n, v in arrays.items()}, {n: v[4:5] for n, v in arrays.items()}]
    samples = [s for s in samples if len(next(iter(s.values())))]
    metrics["maxRelDiff"] = check_export(call, out, samples, NAME, "the torch.export program")
    program_copy = ctx.scratch("original", "model.pt2")
    shutil.copyfile(path, program_copy)
    return PassResult(ModelArtifact(onnx=out, torch=program_copy, history=(NAME,)), metrics)


def _record(ctx: PassContext, names: list[str], counts: dict[str, int]) -> None:
    ctx.shared[inputs.BINDING] = {"inputs": names, "samples": counts}

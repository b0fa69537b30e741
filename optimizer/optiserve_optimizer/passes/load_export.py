"""Load the source model: verify the pin, check it, export TorchScript to ONNX."""

from __future__ import annotations

import shutil
from typing import Any

from optiserve.uri import UnsupportedUriError, local_path
from optiserve_optimizer import data
from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult, file_sha256
from optiserve_optimizer.errors import DataError, DigestMismatchError, ModelLoadError
from optiserve_optimizer.onnx_utils import load_model, signature
from optiserve_optimizer.passes import torch_export
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
        if not path.is_file():
            raise ModelLoadError(NAME, f"model file {path} does not exist")
        digest = file_sha256(path)
        if ctx.source.sha256 and digest != ctx.source.sha256:
            raise DigestMismatchError(
                NAME, f"{path.name} has sha256 {digest}, the spec pins {ctx.source.sha256}"
            )
        out = ctx.scratch("original", "model.onnx")
        metrics: dict[str, Any] = {"sha256": digest[:12]}
        if ctx.source.format == "onnx":
            load_model(path, NAME)
            shutil.copyfile(path, out)
            return PassResult(ModelArtifact(onnx=out, history=(NAME,)), metrics)

        module = torch_export.load_torchscript(path, NAME)
        eval_path = local_path(ctx.spec.accuracy.dataset)
        members = data.describe(eval_path, NAME)
        names = [n for n in members if n != data.LABELS]
        if not names:
            raise DataError(NAME, f"{eval_path.name} holds no input arrays to export with")
        arrays = data.load(eval_path, names, limit=4)
        samples = [{n: arrays[n][:2] for n in names}, {n: arrays[n][2:3] for n in names}]
        torch_export.export_onnx(module, samples[0], out, NAME)
        load_model(out, NAME)
        metrics["maxRelDiff"] = torch_export.check_export(module, out, samples, NAME)
        torch_copy = ctx.scratch("original", "model.pt")
        shutil.copyfile(path, torch_copy)
        return PassResult(ModelArtifact(onnx=out, torch=torch_copy, history=(NAME,)), metrics)


def model_signature(artifact: ModelArtifact) -> Any:
    return signature(load_model(artifact.onnx, NAME))

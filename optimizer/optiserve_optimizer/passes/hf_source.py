"""The load step of a ``huggingface`` source: check the folder, export to ONNX, prove the export
right on a padded batch.

Every torch → ONNX export of a transformer here (the source, and each compressed student) goes
through ``export_checked``: the exported model is compared with the torch model on a batch of
mixed lengths with padding, per sample and only over real tokens for per-token outputs, and a
disagreement fails with the largest difference named. An export that drops the attention mask
(a trace that skipped the mask, or an exporter that never passed it) agrees on unpadded inputs
and is caught only this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optiserve.uri import UnsupportedUriError, local_path
from optiserve_optimizer import data, inputs
from optiserve_optimizer.artifact import ModelArtifact, PassContext, PassResult, path_sha256
from optiserve_optimizer.errors import (
    DataError,
    DigestMismatchError,
    ModelLoadError,
    PassFailedError,
)
from optiserve_optimizer.passes import hf_model, torch_export

TOLERANCE = 1e-3  # of the output scale (at least 1): float reassociation differs by runtime
CHECK_ROWS = 8

Feed = dict[str, npt.NDArray[Any]]


def padded_batch(arrays: Mapping[str, npt.NDArray[Any]], pad_id: int) -> Feed:
    """Up to ``CHECK_ROWS`` samples with mixed real lengths: row i keeps about (n - i)/n of its
    tokens, the rest becomes padding (mask 0, pad token), whatever padding the data had."""
    feed = {k: np.array(v[:CHECK_ROWS], copy=True) for k, v in arrays.items()}
    mask = feed["attention_mask"]
    rows = len(mask)
    for i in range(rows):
        real = int(mask[i].sum())
        length = max(1, round(real * (rows - i) / rows))
        mask[i, length:] = 0
        feed["input_ids"][i, length:] = pad_id
        if "token_type_ids" in feed:
            feed["token_type_ids"][i, length:] = 0
    return feed


def torch_forward(
    module: Any, feed: Mapping[str, npt.NDArray[Any]], device: str = "cpu"
) -> npt.NDArray[np.float32]:
    import torch

    module.eval()  # dropout off, whatever a caller left it in
    args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(device) for n in module.input_names]
    with torch.no_grad():
        out = module(*args)
    result: npt.NDArray[np.float32] = out.detach().cpu().numpy().astype(np.float32)
    return result


def export(module: Any, feed: Feed, out: Path, pass_name: str) -> None:
    """TorchScript-tracer export with dynamic batch and sequence axes (the token-classification
    output keeps both), traced on the padded ``feed`` so the mask path is in the trace."""
    names = list(module.input_names)
    output = hf_model.OUTPUT_NAME[module.task]
    dynamic: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    per_token = module.task == "token-classification"
    dynamic[output] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    torch_export.trace_to_onnx(module, feed, names, [output], dynamic, out, pass_name)


def check_padded(module: Any, onnx_path: Path, feed: Feed, pass_name: str) -> dict[str, Any]:
    """Compares the ONNX model with ``module`` on the padded ``feed``; fails naming the largest
    difference (sample, its real length, token) when it exceeds the tolerance."""
    from optiserve_optimizer.onnx_utils import session

    sess = session(onnx_path, level="disable")
    onnx_inputs = {i.name for i in sess.get_inputs()}
    lost = [n for n in module.input_names if n not in onnx_inputs]
    if lost:
        raise PassFailedError(
            pass_name,
            f"the exported model has no input {lost}: the export dropped it (for attention_mask "
            "that means padded batches are wrong)",
        )
    expected = torch_forward(module, feed)
    got = np.asarray(sess.run(None, {n: feed[n] for n in module.input_names})[0], np.float32)
    if got.shape != expected.shape:
        raise PassFailedError(
            pass_name, f"exported output has shape {got.shape}, the torch model {expected.shape}"
        )
    mask = feed["attention_mask"].astype(bool)
    lengths = [int(n) for n in mask.sum(axis=1)]
    diff = np.abs(got - expected)
    if diff.ndim == 3:  # per-token outputs: padded positions carry no answer
        per_item = np.where(mask, diff.max(axis=-1), 0.0)
    else:
        per_item = diff.reshape(len(diff), -1).max(axis=1)
    worst = float(per_item.max()) if per_item.size else 0.0
    scale = max(1.0, float(np.abs(expected).max()) if expected.size else 1.0)
    if worst > TOLERANCE * scale:
        where = np.unravel_index(int(per_item.argmax()), per_item.shape)
        sample = int(where[0])
        token = f", token {int(where[1])}" if per_item.ndim == 2 else ""
        raise PassFailedError(
            pass_name,
            f"the exported model disagrees with the torch model on a padded batch (real lengths "
            f"{lengths}): largest difference {worst:.4g} at sample {sample} (length "
            f"{lengths[sample]}){token}, tolerance {TOLERANCE * scale:.2g}; an export that drops "
            "the attention mask does this",
        )
    return {"paddedCheckMaxDiff": float(f"{worst:.3g}"), "paddedCheckLengths": lengths}


def export_checked(
    module: Any, feed: Feed, onnx_out: Path, twin_dir: Path, pass_name: str
) -> tuple[Path, dict[str, Any]]:
    """Saves the twin, exports and checks the ONNX model; returns (twin weights, metrics)."""
    weights = hf_model.save_twin(module, twin_dir)
    export(module, feed, onnx_out, pass_name)
    return weights, check_padded(module, onnx_out, feed, pass_name)


def check_feed(path: Path, names: list[str], vocab_size: int, pass_name: str) -> Feed:
    """The first rows of ``path``'s model inputs, checked to fit the model's embedding table."""
    members = data.describe(path, pass_name)
    missing = [n for n in names if n not in members]
    if missing:
        raise DataError(
            pass_name,
            f"{path.name} lacks the model inputs {missing} (the model takes {names}); it has "
            f"{sorted(members)}",
        )
    arrays = data.load(path, names, limit=CHECK_ROWS)
    ids = arrays["input_ids"]
    if ids.size and (int(ids.max()) >= vocab_size or int(ids.min()) < 0):
        raise DataError(
            pass_name,
            f"{path.name}['input_ids'] holds ids up to {int(ids.max())}, beyond the model's "
            f"{vocab_size} tokens: the data was tokenized with another tokenizer",
        )
    return arrays


def pad_id(config: Any) -> int:
    value = getattr(config, "pad_token_id", None)
    return int(value) if value is not None else 0


def load_export(ctx: PassContext, pass_name: str, datasets: Sequence[inputs.Dataset]) -> PassResult:
    """The ``load_export`` step for ``format: huggingface``; ``datasets`` (the accuracy set
    first) are all bound to the model's inputs by name before the export, as for TorchScript:
    the names are the model's (``input_ids``, ``attention_mask``, maybe ``token_type_ids``),
    dtypes and sample shapes the accuracy set's, with a free sequence axis."""
    try:
        folder = local_path(ctx.source.uri)
    except UnsupportedUriError as exc:
        raise ModelLoadError(pass_name, str(exc)) from exc
    config = hf_model.read_config(folder, pass_name)
    digest = path_sha256(folder)
    if ctx.source.sha256 and digest != ctx.source.sha256:
        raise DigestMismatchError(
            pass_name, f"{folder.name} has sha256 {digest}, the spec pins {ctx.source.sha256}"
        )
    task = ctx.source.task or hf_model.FEATURE_EXTRACTION
    tokenizer = hf_model.check_tokenizer(folder, config, pass_name)
    module = hf_model.load_folder(folder, task, pass_name)
    arrays = check_feed(
        local_path(ctx.spec.accuracy.dataset), module.input_names, int(config.vocab_size), pass_name
    )
    members = data.describe(datasets[0].path, datasets[0].role)
    specs = inputs.torchscript_inputs(module.input_names, members)
    counts = inputs.check_datasets(specs, [hf_model.OUTPUT_NAME[task]], datasets)
    ctx.shared[inputs.BINDING] = {"inputs": [t.name for t in specs], "samples": counts}
    feed = padded_batch(arrays, pad_id(config))
    onnx_out = ctx.scratch("original", "model.onnx")
    weights, metrics = export_checked(
        module, feed, onnx_out, ctx.scratch("original", "twin"), pass_name
    )
    return PassResult(
        ModelArtifact(onnx=onnx_out, torch=weights, history=(pass_name,)),
        {
            "sha256": digest[:12],
            "architecture": config.model_type,
            "task": task,
            "layers": int(config.num_hidden_layers),
            "params": hf_model.parameter_count(module),
            "tokenizer": tokenizer or "none",
            **metrics,
        },
    )

"""The Triton model repository and ``report.json``, written to a temp folder then renamed.

``<out>/<digest>/`` is content-addressed by the recipe digest; a folder that exists is complete
(it only ever appears by an atomic rename), so a rerun reuses it instead of rebuilding.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal, cast

from optiserve.api import ServingSpec
from optiserve.model_io import ModelSignature
from optiserve.uri import pvc_root

REPORT = "report.json"
REPOSITORY = "model_repository"

_TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


def fallback_model_config(
    name: str, signature: ModelSignature, serving: ServingSpec, platform: str
) -> str:
    """Minimal config.pbtxt, used only while ``optiserve.render.triton`` does not exist."""

    def tensors(kind: str, specs: Any) -> list[str]:
        body = ",\n".join(
            f'  {{ name: "{t.name}" data_type: {_TRITON_TYPES.get(t.dtype, "TYPE_FP32")} '
            f"dims: [{', '.join(str(d) for d in t.shape)}] }}"
            for t in specs
        )
        return [f"{kind} [\n{body}\n]"]

    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {serving.max_batch_size}",
    ]
    lines += tensors("input", signature.inputs) + tensors("output", signature.outputs)
    batching = serving.dynamic_batching
    if batching.enabled and serving.max_batch_size > 0:
        preferred = "".join(f" preferred_batch_size: {b}" for b in batching.preferred_batch_sizes)
        lines.append(
            f"dynamic_batching {{ max_queue_delay_microseconds: "
            f"{batching.max_queue_delay_microseconds}{preferred} }}"
        )
    group = serving.instance_group
    lines.append(f"instance_group [ {{ count: {group.count} kind: {group.kind} }} ]")
    if serving.response_cache.enabled:
        lines.append("response_cache { enable: true }")
    return "\n".join(lines) + "\n"


def model_config(
    name: str, signature: ModelSignature, serving: ServingSpec, platform: str
) -> tuple[str, str]:
    """(config.pbtxt text, which renderer made it)."""
    try:
        from optiserve.render.triton import render_model_config
    except ImportError:
        return fallback_model_config(name, signature, serving, platform), "fallback"
    chosen = cast(Literal["onnxruntime_onnx", "tensorrt_plan", "python"], platform)
    return render_model_config(name, signature, serving, chosen), "optiserve.render.triton"


def as_uri(path: Path) -> str:
    """``pvc://CLAIM/...`` when ``path`` lies under the PVC root, else ``file://``."""
    root = pvc_root().resolve()
    resolved = path.resolve()
    if resolved.is_relative_to(root) and resolved != root:
        return "pvc://" + resolved.relative_to(root).as_posix() + "/"
    return f"file://{resolved}/"


def existing_report(out_dir: Path, digest: str) -> dict[str, Any] | None:
    path = out_dir / digest / REPORT
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def write_repository(
    out_dir: Path,
    digest: str,
    model_name: str,
    model_file: Path,
    config_text: str,
    report: dict[str, Any],
) -> Path:
    """Writes ``<out>/<digest>/`` atomically; returns it. A concurrent winner is kept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / digest
    temp = out_dir / f".tmp-{digest}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        version_dir = temp / REPOSITORY / model_name / "1"
        version_dir.mkdir(parents=True)
        target = "model.plan" if model_file.suffix == ".plan" else "model.onnx"
        shutil.copyfile(model_file, version_dir / target)
        (temp / REPOSITORY / model_name / "config.pbtxt").write_text(config_text)
        (temp / REPORT).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
        try:
            temp.rename(final)  # atomic on one file system: readers see all or nothing
        except OSError:
            if not (final / REPORT).is_file():
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final

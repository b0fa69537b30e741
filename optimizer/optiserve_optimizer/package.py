"""The Triton model repository and ``report.json``, written to a temp folder then renamed.

``<out>/<digest>/`` is content-addressed by the recipe digest; a folder that exists is complete
(it only ever appears by an atomic rename), so a rerun reuses it instead of rebuilding.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

from optiserve.api import ServingSpec
from optiserve.model_io import ModelSignature
from optiserve.render.serving_config import (
    ARTIFACT_FACTS_FILE,
    SERVING_FIELDS,
    facts_json,
    serving_settings,
)
from optiserve.render.triton import render_model_config
from optiserve.report_page import render_report_page
from optiserve.uri import pvc_root

REPORT = "report.json"
REPORT_PAGE = "report.html"  # the same report as a self-contained page (optiserve report)
REPOSITORY = "model_repository"


def model_config(
    name: str,
    signature: ModelSignature,
    serving: ServingSpec,
    platform: str,
    *,
    tuned: bool = False,
) -> tuple[str, str]:
    """(config.pbtxt text, which renderer made it): the operator's own renderer, so what the Job
    packages and what the operator would render can never differ.

    The serving-only settings (``SERVING_FIELDS``) are left at their defaults: they are not part
    of the recipe, so the artifact must not depend on them. The pods serve a config assembled
    from ``artifact_facts`` and the spec's settings instead; this one makes the artifact a
    repository Triton can load as it is. ``tuned``: ``serving`` is what the recipe's own
    ``serving.tuning`` search chose (part of the recipe), kept whole.
    """
    chosen = cast(Literal["onnxruntime_onnx", "tensorrt_plan", "python"], platform)
    plain = ServingSpec(max_batch_size=serving.max_batch_size)
    artifact_serving = (
        serving
        if tuned
        else serving.model_copy(update={f: getattr(plain, f) for f in SERVING_FIELDS})
    )
    return render_model_config(name, signature, artifact_serving, chosen), "optiserve.render.triton"


def artifact_facts(
    name: str,
    signature: ModelSignature,
    serving: ServingSpec,
    platform: str,
    *,
    tuned: bool = False,
) -> str:
    """``ARTIFACT_FACTS_FILE``: what the pods' init container renders the served config from;
    with ``tuned``, the search's settings as the artifact's serving defaults (the spec's own
    settings win over them when the pods assemble the config)."""
    defaults = serving_settings(serving) if tuned else None
    return facts_json(name, signature, platform, serving.max_batch_size, defaults)


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
    facts_text: str | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    add_models: Callable[[Path], object] | None = None,
) -> Path:
    """Writes ``<out>/<digest>/`` atomically; returns it. A concurrent winner is kept.
    ``add_models`` writes more models into the repository folder before the rename (the
    tokenizer and the text ensemble of ``serving.tokenizer``)."""
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
        if facts_text is not None:
            (temp / REPOSITORY / model_name / ARTIFACT_FACTS_FILE).write_text(facts_text)
        (temp / REPORT).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
        (temp / REPORT_PAGE).write_text(render_report_page(report), encoding="utf-8")
        if add_models is not None:
            add_models(temp / REPOSITORY)
        for file_name, content in (extra_files or {}).items():  # e.g. tuning.png
            (temp / file_name).write_bytes(content)
        try:
            temp.rename(final)  # atomic on one file system: readers see all or nothing
        except OSError:
            if not (final / REPORT).is_file():
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final

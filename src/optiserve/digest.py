"""The recipe digest: same spec + same source + same tool version + same GPU class = same digest.

Pure and dependency-free (hashlib and json only), in the core so the operator can name the
artifact folder and the Job before any Job runs, and the optimizer writes to that folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from typing import Any


# Once a process: importlib.metadata scans every distribution on sys.path (~5% of the
# operator's CPU in a burst, as every pass computes the recipe digest), and the installed
# version does not change under a running process.
@functools.cache
def optiserve_version() -> str:
    try:
        return metadata.version("optiserve")
    except metadata.PackageNotFoundError:
        return "0+unknown"


# The serving fields that are part of the artifact: the largest batch the Job packaged the
# model for. How Triton serves the artifact (dynamic batching, response cache, instance group,
# CUDA graphs: optiserve.render.serving_config.SERVING_FIELDS) is applied at rollout and is not
# part of the recipe, so changing it rolls the Deployment and starts no Job; replicas,
# autoscaling and resources only change the Deployment too. ``serving.tuning`` is part of the
# recipe: the Job runs the search, and what it chose travels with the artifact.
MODEL_CONFIG_FIELDS = frozenset({"max_batch_size", "tuning"})
# ``serving.tokenizer`` is part of the recipe too: with it the Job packages two more models
# (the tokenizer and the text ensemble) into the artifact. It enters the digest only when true,
# so every artifact made before the field existed keeps its digest.
TOKENIZER_FIELD = "tokenizer"


def recipe_digest(
    source_uri: str,
    source_sha256: str | None,
    optimization: dict[str, Any],
    gpu_class: str | None,
    version: str | None = None,
    model_config: dict[str, Any] | None = None,
    source_task: str | None = None,
) -> str:
    """sha256 hex of the canonical JSON of everything that decides the optimized artifact.

    ``optimization`` is ``spec.optimization`` dumped with ``by_alias=True, exclude_none=True``
    (``mode="json"``); key order does not matter because the JSON is canonicalised.
    """
    source: dict[str, Any] = {"uri": source_uri, "sha256": source_sha256}
    if source_task is not None:  # the head served (huggingface); absent keeps older digests
        source["task"] = source_task
    recipe = {
        "source": source,
        "optimization": optimization,
        "optiserve": version if version is not None else optiserve_version(),
        "gpuClass": gpu_class,
        "modelConfig": model_config,
    }
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def spec_recipe_digest(
    name: str, source: Any, optimization: Any, serving: Any, version: str | None = None
) -> str:
    """The digest of API models (``SourceSpec``, ``OptimizationSpec``, ``ServingSpec``),
    duck-typed on purpose.

    ``name`` is the model's name in the Triton repository the artifact holds, so two
    OptimizedModels with the same recipe but different names do not share an artifact.

    ``optimization.job`` (image, resources, deadlines) decides how the Job runs, not what it
    makes, so changing it reuses the finished artifact instead of rebuilding it.
    """
    target = optimization.target
    gpu_class = target.gpu_product if target.device == "gpu" else None
    return recipe_digest(
        source.uri,
        source.sha256,
        optimization.model_dump(by_alias=True, exclude_none=True, exclude={"job"}, mode="json"),
        gpu_class,
        version,
        {
            "name": name,
            **serving.model_dump(
                by_alias=True, exclude_none=True, include=set(MODEL_CONFIG_FIELDS), mode="json"
            ),
            **({TOKENIZER_FIELD: True} if getattr(serving, TOKENIZER_FIELD, False) else {}),
        },
        getattr(source, "task", None),
    )

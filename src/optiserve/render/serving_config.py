"""How Triton serves an artifact, kept apart from what the optimization Job built. Pure.

The Job's artifact is keyed by the optimization recipe only (``optiserve.digest``): the model
file, and the facts the Job found about it (inputs, outputs, platform, the largest batch it
supports) in ``ARTIFACT_FACTS_FILE`` beside the model's ``config.pbtxt``. How Triton serves it
(dynamic batching, response cache, instance group, CUDA graphs: ``SERVING_FIELDS``) comes from
the spec at rollout: the Deployment's init container (``python -m optiserve.serve.assemble``)
renders the served ``config.pbtxt`` from the facts and the spec's settings into an emptyDir,
with links to the artifact's version folders, and Triton serves that folder.

The settings travel as JSON in the init container's arguments, so they are part of the pod
template: a change rolls the Deployment (a new ReplicaSet), every pod of a ReplicaSet (and a
pod that restarts) assembles the same config, and there is no ConfigMap to keep in step with
old ReplicaSets or to clean up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from optiserve.api.serving import ServingSpec
from optiserve.api.tuning import TuningSummary, merge_tuned
from optiserve.model_io import ModelSignature, TensorSpec
from optiserve.render.triton import PLATFORMS, TritonConfigError, render_model_config

# ServingSpec fields that land in config.pbtxt but not in the artifact: a change to one of them
# rolls the Deployment and starts no Job. (maxBatchSize stays with the artifact: it is the
# largest batch the Job checked the model with.)
SERVING_FIELDS = ("dynamic_batching", "response_cache", "instance_group", "cuda_graphs")
ARTIFACT_FACTS_FILE = "optiserve-artifact.json"
FACTS_VERSION = 1


T = TypeVar("T")


class ArtifactFactsError(ValueError):
    """The artifact's facts file is missing a field or is not JSON of the expected shape."""


def serving_settings(serving: ServingSpec) -> dict[str, Any]:
    """The spec's serving-only settings as JSON-ready camelCase, only those the spec set (the
    API server's defaulting sets them all; a model built in Python may leave some unset)."""
    return serving.model_dump(
        by_alias=True, include=set(SERVING_FIELDS), exclude_unset=True, mode="json"
    )


def rollout_settings(serving: ServingSpec, tuning: TuningSummary | None) -> dict[str, Any]:
    """The settings the pods are given: the spec's, with what the Job's ``serving.tuning``
    search chose for the settings it searched (``api.tuning.merge_tuned``: the settings the
    spec keeps out of the search win). An untuned search leaves the spec's settings."""
    chosen = tuning.settings if tuning is not None and tuning.outcome != "untuned" else None
    return serving_settings(merge_tuned(serving, chosen))


def settings_json(settings: Mapping[str, Any]) -> str:
    """Canonical JSON: the same settings give byte-identical pod templates (no needless roll)."""
    return json.dumps(dict(settings), sort_keys=True, separators=(",", ":"))


def facts_json(
    name: str,
    signature: ModelSignature,
    platform: str,
    max_batch_size: int,
    serving_defaults: Mapping[str, Any] | None = None,
) -> str:
    """What the Job writes to ``ARTIFACT_FACTS_FILE``. ``serving_defaults`` is where settings
    the Job chose itself (a tuning search) go; the spec's own settings win over them."""
    if platform not in PLATFORMS:
        raise TritonConfigError(f"platform {platform!r} is not one of {', '.join(PLATFORMS)}")
    document = {
        "version": FACTS_VERSION,
        "name": name,
        "platform": platform,
        "maxBatchSize": max_batch_size if signature.batched else 0,
        "batched": signature.batched,
        "inputs": [_tensor(t) for t in signature.inputs],
        "outputs": [_tensor(t) for t in signature.outputs],
        "servingDefaults": dict(serving_defaults or {}),
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def merged_serving(
    max_batch_size: int,
    spec_settings: Mapping[str, Any],
    serving_defaults: Mapping[str, Any] | None = None,
) -> ServingSpec:
    """The seam between tuned defaults and the spec: the artifact's ``serving_defaults``
    (settings a tuning search in the Job may write) under the spec's settings, the spec
    winning key by key (a whole ``dynamicBatching`` object at a time), the artifact's maximum
    batch size over both. A typed error when the result is not a valid ServingSpec."""
    merged = {**dict(serving_defaults or {}), **dict(spec_settings)}
    merged["maxBatchSize"] = max_batch_size
    if max_batch_size == 0:  # a model without a batch dimension cannot batch on the server
        batching = dict(merged.get("dynamicBatching") or {})
        merged["dynamicBatching"] = {**batching, "enabled": False, "preferredBatchSizes": []}
    try:
        return ServingSpec.model_validate(merged)
    except ValidationError as err:
        raise TritonConfigError(f"serving settings do not fit the artifact: {err}") from None


def check_fits_artifact(artifact_format: str, serving: ServingSpec) -> None:
    """What the operator can check before a pod tries (it knows the artifact's format): a
    typed error, so the spec is refused with a reason instead of a crash-looping init container."""
    if artifact_format == "tensorrt_plan" and serving.instance_group.kind == "KIND_CPU":
        raise TritonConfigError(
            "the artifact is a TensorRT plan, which runs on a GPU only: "
            "serving.instanceGroup.kind KIND_CPU cannot serve it"
        )


def served_model_config(facts_text: str, spec_settings: Mapping[str, Any]) -> str:
    """The ``config.pbtxt`` Triton serves: the artifact's facts with the merged settings."""
    facts = _load(facts_text)
    signature = ModelSignature(
        inputs=tuple(_tensor_spec(t) for t in _list(facts, "inputs")),
        outputs=tuple(_tensor_spec(t) for t in _list(facts, "outputs")),
        batched=bool(facts.get("batched", True)),
    )
    platform = _field(facts, "platform", str)
    if platform not in PLATFORMS:
        raise ArtifactFactsError(f"platform {platform!r} is not one of {', '.join(PLATFORMS)}")
    defaults = facts.get("servingDefaults") or {}
    if not isinstance(defaults, dict):
        raise ArtifactFactsError("servingDefaults must be an object")
    serving = merged_serving(_field(facts, "maxBatchSize", int), spec_settings, defaults)
    return render_model_config(_field(facts, "name", str), signature, serving, platform)


def _tensor(tensor: TensorSpec) -> dict[str, Any]:
    return {"name": tensor.name, "dtype": tensor.dtype, "shape": list(tensor.shape)}


def _load(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArtifactFactsError(f"not JSON: {err}") from None
    if not isinstance(document, dict):
        raise ArtifactFactsError("the facts must be a JSON object")
    if document.get("version") != FACTS_VERSION:
        raise ArtifactFactsError(f"facts version {document.get('version')!r} is not supported")
    return document


def _field(document: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = document.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArtifactFactsError(f"{key!r} must be a {kind.__name__}, not {value!r}")
    return value


def _list(document: Mapping[str, Any], key: str) -> list[Any]:
    return _field(document, key, list)


def _tensor_spec(entry: Any) -> TensorSpec:
    if not isinstance(entry, dict):
        raise ArtifactFactsError(f"a tensor must be an object, not {entry!r}")
    shape = _field(entry, "shape", list)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ArtifactFactsError(f"tensor {entry.get('name')!r}: shape must list integers")
    return TensorSpec(_field(entry, "name", str), _field(entry, "dtype", str), tuple(shape))


# ---- the Deployment's side ----------------------------------------------------------------
SERVED_REPOSITORY = "/models"  # the emptyDir Triton serves
SERVED_VOLUME = "served-models"
ANNOTATION_SERVING_CONFIG = "optiserve.io/serving-config"
ASSEMBLE_RESOURCES: dict[str, dict[str, int | str]] = {  # it writes one small file and links
    "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "16Mi"},
    "limits": {"cpu": "1", "memory": "256Mi", "ephemeral-storage": "64Mi"},
}


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """A short digest of the settings, shown on the pod template (which config a pod has)."""
    return hashlib.sha256(settings_json(settings).encode()).hexdigest()[:16]


def served_repository(
    image: str,
    artifact_mount: Mapping[str, Any],
    settings: Mapping[str, Any],
    security_context: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(init container, emptyDir volume, Triton's mount of it): the init container reads the
    artifact at ``artifact_mount`` (Triton mounts it at the same path, so the links resolve)
    and writes the served repository into the volume."""
    volume = {"name": SERVED_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}}
    mount = {"name": SERVED_VOLUME, "mountPath": SERVED_REPOSITORY}
    init = {
        "name": "serving-config",
        "image": image,
        "command": [
            "python",
            "-m",
            "optiserve.serve.assemble",
            f"--artifact={artifact_mount['mountPath']}",
            f"--settings={settings_json(settings)}",
            f"--out={SERVED_REPOSITORY}",
        ],
        "resources": ASSEMBLE_RESOURCES,
        "securityContext": dict(security_context),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [dict(artifact_mount), dict(mount)],  # copies: no YAML anchors
    }
    return init, volume, mount

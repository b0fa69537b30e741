"""Reading the optimizer's termination-message summary, and keeping secrets out of messages.

The optimizer leaves a compact JSON object in its container's termination message (at most
4 KiB). Parsing is lenient about naming (camelCase or snake_case, nested ``artifact`` or flat
keys) and strict about meaning: no artifact location, no success. Pure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from optiserve.api.status import Artifact, Candidate, Metrics, ServingCost
from optiserve.api.tuning import TuningSummary
from optiserve.uri import DEFAULT_PVC_ROOT

MAX_MESSAGE = 1024
# The scheme's length is bounded: unbounded, every position of a long word would scan to its
# end looking for "://", and a 100 kB message took 18 s (quadratic) instead of milliseconds.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)[^/\s@:]+(:[^/\s@]*)?@")
_SECRET_PARAM = re.compile(
    r"(?i)(?P<key>token|password|passwd|secret|api[_-]?key|access[_-]?key|signature|sig|"
    r"x-amz-[a-z-]+|authorization)(?P<sep>[=:]\s*)(?P<value>[^&\s\"',;]+)"
)
_SHA256 = re.compile(r"[a-f0-9]{64}")
_BEARER = re.compile(r"(?i)bearer\s+[a-z0-9._~+/=-]+")

Model = TypeVar("Model", bound=BaseModel)


class SummaryError(ValueError):
    """The termination message is not a summary the operator can use."""


def redact(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` without credentials (URL userinfo, token=..., Bearer ...), at most ``limit``.

    Bounded work whatever the input: at most ``16 * limit`` characters are looked at. The
    last word before that cut is dropped too, since a credential cut in half would no longer
    match the patterns (credentials never hold whitespace, so they sit within one word).
    """
    cap = 16 * limit
    if len(text) > cap:
        words = text[:cap].rsplit(maxsplit=1)
        text = (words[0] if len(words) > 1 else "") + " ..."
    text = _BEARER.sub("Bearer ***", text)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m['key']}{m['sep']}***", text)
    text = " ".join(text.split())  # one line: events and conditions read better that way
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Summary:
    artifact: Artifact
    metrics: Metrics | None
    candidates: tuple[Candidate, ...]


def _pick(model: type[Model], data: Any) -> Model | None:
    """``model`` from the keys of ``data`` it knows (by alias or by name); None if invalid."""
    if not isinstance(data, dict):
        return None
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    try:
        return model.model_validate({k: v for k, v in data.items() if k in known})
    except ValidationError:
        return None


def as_pvc_uri(location: str, default: str) -> str:
    """The reported location as ``pvc://``; ``default`` when it is not inside a claim.

    A path under the Job's ``/mnt/pvc/<claim>/`` becomes ``pvc://<claim>/...``; anything else
    (a path the pod saw under another root) cannot be mounted by the server pods, so the
    operator falls back to where it told the Job to write.
    """
    if location.startswith("pvc://"):
        return location
    path = location.removeprefix("file://")
    prefix = DEFAULT_PVC_ROOT.rstrip("/") + "/"
    if path.startswith(prefix):
        return "pvc://" + path[len(prefix) :]
    return default


def _report_uri(page: Any, default_uri: str) -> str | None:
    """Where the report page is for a reader outside the Job: on the claim (``pvc://``), or
    with ``storage.s3`` beside the uploaded model repository (the Job names its own emptyDir,
    which is gone; it uploads the whole digest folder, page included)."""
    if not page:
        return None
    if default_uri.startswith("s3://"):
        folder = default_uri.rstrip("/").removesuffix("/model_repository")
        return f"{folder}/report.html"
    return as_pvc_uri(str(page), "") or None


def _first(data: dict[str, Any], *keys: str) -> Any:
    return next((data[k] for k in keys if data.get(k) not in (None, "")), None)


def parse_summary(message: str | None, digest: str, default_uri: str) -> Summary:
    """The artifact, metrics and candidates a successful Job reported.

    ``digest`` is the operator's recipe digest (the key the artifact is recorded under);
    ``default_uri`` is where the optimizer writes when the summary does not say.
    """
    if not message or not message.strip():
        raise SummaryError("the optimizer left no termination message")
    try:
        data = json.loads(message)
    except json.JSONDecodeError as exc:
        raise SummaryError(f"termination message is not JSON: {redact(message, 200)}") from exc
    if not isinstance(data, dict):
        raise SummaryError("termination message is not a JSON object")
    nested = data.get("artifact")
    nested = nested if isinstance(nested, dict) else {}
    merged = {**data, **nested}
    reported = _first(merged, "digest", "recipeDigest", "recipe_digest")
    if reported is not None and str(reported).removeprefix("sha256:") != digest:
        raise SummaryError(f"the Job reported digest {reported}, expected {digest}")
    location = _first(merged, "uri", "modelRepository", "model_repository", "path")
    chosen = _first(merged, "candidate", "chosen", "chosenCandidate", "chosen_candidate")
    # The optimized source's hash, to compare with the file at source.uri now; dropped, not
    # fatal, when it is not a sha256 (a summary from an older optimizer has none).
    source = str(_first(merged, "sourceSha256", "source_sha256") or "")
    artifact = Artifact(
        digest=digest,
        uri=as_pvc_uri(str(location), default_uri) if location else default_uri,
        precision=str(_first(merged, "precision") or "fp32"),
        format=str(_first(merged, "format") or "onnx"),
        candidate=str(chosen or ""),
        report=_report_uri(_first(merged, "report"), default_uri),
        source_sha256=source if _SHA256.fullmatch(source) else None,
        # What serving it cost (sizes the Triton pod); dropped when unreadable: defaults apply.
        serving_cost=_pick(ServingCost, merged.get("servingCost")),
        # serving.tuning's search (status.serving.tuning); dropped when unreadable.
        tuning=_pick(TuningSummary, merged.get("tuning")),
    )
    raw_candidates = data.get("candidates")
    candidates = (
        tuple(c for c in (_pick(Candidate, raw) for raw in raw_candidates or []) if c is not None)
        if isinstance(raw_candidates, list)
        else ()
    )
    return Summary(artifact, _metrics(data.get("metrics")), candidates[:64])


def _metrics(data: Any) -> Metrics | None:
    """The metrics; measurement conditions the model cannot read are dropped, not the ratio."""
    picked = _pick(Metrics, data)
    if picked is None and isinstance(data, dict) and "measured" in data:
        picked = _pick(Metrics, {k: v for k, v in data.items() if k != "measured"})
    return picked


def failure_text(message: str | None) -> str:
    """A failed container's message: the ``error`` of a JSON summary, else the text itself."""
    if not message:
        return ""
    try:
        data = json.loads(message)
    except json.JSONDecodeError:
        return redact(message)
    if isinstance(data, dict):
        found = _first(data, "error", "message", "reason")
        if isinstance(found, dict):  # {"type": ..., "pass": ..., "message": ...}
            where = f" in {found['pass']}" if found.get("pass") else ""
            return redact(f"{found.get('type', 'Error')}{where}: {found.get('message', '')}")
        if found is not None:
            return redact(str(found))
    return redact(message)

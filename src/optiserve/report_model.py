"""``optiserve report om/NAME``: where an OptimizedModel's report is, asked of the cluster.

The model is read with ``kubectl`` in the caller's kubeconfig context (``--context``,
``KUBECONFIG``), so the caller's own RBAC decides whether they may see it: only ``get`` on the
model, never its Secret. Its ``status.artifact.report`` (else ``status.artifact.uri``) is then
read as any ARTIFACT is, with the caller's credentials (``optiserve.remote.report_object``).

Where those credentials go is the caller's decision, never the model's: whoever may edit a
model could otherwise point ``spec.objectStore.endpoint`` at their own server and collect the
signed requests (the access key ID, a session token) of everyone who reads its report. So the
model's region and addressing fill in what the caller's environment leaves unset, but its
endpoint is only named in the error when the caller has set none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from optiserve.remote.s3 import ADDRESSING_ENV, ENDPOINT_ENV, REGION_ENV

MODEL_PREFIXES = ("om/", "optimizedmodel/", "optimizedmodels/", "optimizedmodel.optiserve.io/")
KUBECTL_TIMEOUT_S = 60


class ModelLookupError(Exception):
    """The model could not be read, or has no artifact yet."""


def model_name(target: str) -> str | None:
    """NAME of ``om/NAME`` (and the other spellings kubectl takes); None for anything else."""
    for prefix in MODEL_PREFIXES:
        if target.startswith(prefix) and len(target) > len(prefix):
            return target[len(prefix) :]
    return None


def read_model(name: str, namespace: str | None, context: str | None) -> dict[str, Any]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ModelLookupError("kubectl is not on PATH (give the artifact's URI instead)")
    argv = [kubectl, "get", "optimizedmodels.optiserve.io", name, "-o", "json"]
    if namespace:
        argv += ["--namespace", namespace]
    if context:
        argv += ["--context", context]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ModelLookupError(f"kubectl get took over {KUBECTL_TIMEOUT_S}s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelLookupError(f"kubectl: {last[:300]}")
    try:
        found: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise ModelLookupError("kubectl answered no JSON") from None
    return found


def report_location(model: Mapping[str, Any]) -> str:
    """The model's report page, else its artifact; ModelLookupError when it has none yet."""
    artifact = (model.get("status") or {}).get("artifact") or {}
    location = artifact.get("report") or artifact.get("uri")
    if not location:
        name = (model.get("metadata") or {}).get("name", "the model")
        raise ModelLookupError(f"{name} has no artifact yet (status.artifact is not set)")
    return str(location)


def store_environment(
    model: Mapping[str, Any], env: Mapping[str, str], location: str
) -> dict[str, str]:
    """``env`` with the model's region and addressing where ``env`` names none;
    ModelLookupError when the model's store has an endpoint and ``env`` names none."""
    store = (model.get("spec") or {}).get("objectStore") or {}
    merged = dict(env)
    endpoint = store.get("endpoint")
    has_endpoint = any(env.get(k) for k in ENDPOINT_ENV)
    if location.startswith("s3://") and endpoint and not has_endpoint:
        raise ModelLookupError(
            f"the model's store is at {str(endpoint)[:200]}: set {ENDPOINT_ENV[0]} to the "
            "address you reach it at (your credentials go only where your environment says)"
        )
    if store.get("region") and not any(env.get(k) for k in REGION_ENV):
        merged[REGION_ENV[0]] = str(store["region"])
    if store.get("addressing") and not env.get(ADDRESSING_ENV):
        merged[ADDRESSING_ENV] = str(store["addressing"])
    return merged

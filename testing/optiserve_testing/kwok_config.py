"""kwok configuration for the test cluster: kwok's own default stages, with the pod stages taught
to leave alone the pods that the local pod runner (pod_runner.py) really runs.

Which pods the runner owns is decided in one place, `runner_owns_pod`, and mirrored here as kwok
selector expressions (jq queries ANDed together), so the two can never both act on one pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# Every Job pod carries this label (set by the Job controller since Kubernetes 1.27).
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# Any other pod can ask to be run locally with this label set to "true".
RUN_LOCALLY_LABEL = "optiserve.io/run-locally"
# Every pod in these namespaces runs locally too: the way to have pods that someone else
# renders (the operator's Triton Deployments) run for real, e.g. to see a rollout fail.
RUN_LOCALLY_NAMESPACES = ("local-pods", "local-canary")

NODE_STAGE_FILES = ("node-initialize.yaml", "node-heartbeat-with-lease.yaml")
POD_STAGE_FILES = ("pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml")

# kwok applies a stage only when all of its matchExpressions hold; a missing value counts as
# "DoesNotExist" and as "NotIn" anything, so pods without the labels stay with kwok.
NOT_OWNED_BY_RUNNER: tuple[dict[str, Any], ...] = (
    {"key": f'.metadata.labels["{JOB_NAME_LABEL}"]', "operator": "DoesNotExist"},
    {"key": f'.metadata.labels["{RUN_LOCALLY_LABEL}"]', "operator": "NotIn", "values": ["true"]},
    {"key": ".metadata.namespace", "operator": "NotIn", "values": list(RUN_LOCALLY_NAMESPACES)},
)


class KwokConfigError(RuntimeError):
    """The kwok stage files that hack/cluster/build.sh copies next to the binary are missing."""


def runner_owns_pod(labels: Mapping[str, str] | None, namespace: str = "") -> bool:
    """True when the local pod runner, not kwok, drives this pod's lifecycle."""
    labels = labels or {}
    return (
        JOB_NAME_LABEL in labels
        or labels.get(RUN_LOCALLY_LABEL) == "true"
        or namespace in RUN_LOCALLY_NAMESPACES
    )


def _load_stage(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KwokConfigError(f"kwok stage {path} is missing; run hack/cluster/build.sh kwok")
    stage = yaml.safe_load(path.read_text())
    if not isinstance(stage, dict) or stage.get("kind") != "Stage":
        raise KwokConfigError(f"{path} does not hold a kwok Stage")
    return stage


def exclude_runner_pods(stage: dict[str, Any]) -> dict[str, Any]:
    """Copy of a pod Stage whose selector also requires that the runner does not own the pod."""
    spec = dict(stage["spec"])
    selector = dict(spec.get("selector") or {})
    selector["matchExpressions"] = [
        *selector.get("matchExpressions", []),
        *NOT_OWNED_BY_RUNNER,
    ]
    spec["selector"] = selector
    return {**stage, "spec": spec}


def render_kwok_config(stages_dir: Path) -> str:
    """Multi-document YAML for `kwok --config`: node stages as released, pod stages adapted."""
    documents = [_load_stage(stages_dir / name) for name in NODE_STAGE_FILES]
    documents += [exclude_runner_pods(_load_stage(stages_dir / name)) for name in POD_STAGE_FILES]
    return yaml.safe_dump_all(documents, sort_keys=False)

"""A serving-only change rolls the Deployment and starts no Job; Ready waits for the new pods."""

from __future__ import annotations

import copy
from dataclasses import replace

from optiserve.api import OptimizedModel
from optiserve.render.kubernetes import job_name
from optiserve.render.serving_config import (
    ANNOTATION_SERVING_CONFIG,
    serving_settings,
    settings_fingerprint,
)
from optiserve_operator.reconcile import recipe_digest
from tests.operator.helpers import (
    BASE,
    OWNER,
    deployment,
    job,
    model,
    run,
    spec,
    summary_message,
)


def test_a_serving_only_change_rolls_the_deployment_without_a_job() -> None:
    before = spec()
    digest = recipe_digest(OWNER.name, before)
    done = job(job_name("digits", digest), digest, "succeeded", summary_message(digest))
    started = run(model(before))
    deploying = run(model(before, started.status), jobs=(done,))
    fingerprint = settings_fingerprint(serving_settings(before.serving))
    old_pods = replace(deployment(digest), serving_config=fingerprint)
    ready = run(model(before, deploying.status), jobs=(done,), dep=old_pods)
    assert ready.status.phase == "Ready"

    obj = copy.deepcopy(BASE)
    obj["spec"]["serving"]["dynamicBatching"] = {"maxQueueDelayMicroseconds": 2000}
    after = OptimizedModel.model_validate(obj).spec
    assert recipe_digest(OWNER.name, after) == digest  # same artifact
    changed = run(model(after, ready.status, generation=2), jobs=(done,), dep=old_pods)
    assert changed.create == ()  # no Job, no spec ConfigMap
    template = changed.apply[0]["spec"]["template"]
    new_fingerprint = template["metadata"]["annotations"][ANNOTATION_SERVING_CONFIG]
    assert new_fingerprint != fingerprint
    assert '"maxQueueDelayMicroseconds":2000' in " ".join(
        template["spec"]["initContainers"][0]["command"]
    )
    # The pods still run the old settings: the status must not say Ready for generation 2.
    assert changed.status.phase == "Deploying"
    assert changed.status.observed_generation == 2
    ready_status = {c.type: c.status for c in changed.status.conditions}
    assert ready_status["Ready"] == "False"
    progressing = next(c for c in changed.status.conditions if c.type == "Progressing")
    assert f"serving settings {new_fingerprint[:8]}" in progressing.message

    new_pods = replace(deployment(digest), serving_config=new_fingerprint)
    rolled = run(model(after, changed.status, generation=2), jobs=(done,), dep=new_pods)
    assert rolled.status.phase == "Ready"
    assert rolled.create == ()
    assert rolled.status.artifact is not None and rolled.status.artifact.digest == digest

"""``storage.s3`` through the reconcile decision: the Job's local folder in its summary becomes
the artifact's s3:// URI, and the Deployment pulls exactly that artifact."""

from __future__ import annotations

import copy
import json

from optiserve.api import OptimizedModel
from optiserve.render.kubernetes import job_name
from optiserve_operator.reconcile import recipe_digest
from tests.operator.helpers import BASE, OWNER, job, model, run


def s3_spec() -> OptimizedModel:
    obj = copy.deepcopy(BASE)
    obj["spec"]["storage"] = {"s3": "s3://artifacts/prod"}
    obj["spec"]["objectStore"] = {"endpoint": "http://s3:8333", "credentialsSecret": "w"}
    return OptimizedModel.model_validate(obj)


def test_the_served_artifact_is_the_s3_prefix_of_the_digest() -> None:
    the_spec = s3_spec().spec
    digest = recipe_digest(OWNER.name, the_spec)
    started = run(model(the_spec))
    # The dry-run Deployment already pulls from where the Job will upload.
    (dry_deployment,) = [m for m in started.dry_run if m["kind"] == "Deployment"]
    pull = dry_deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert pull["command"][-2] == f"s3://artifacts/prod/ml/digits/{digest}"

    # The optimizer reports its local emptyDir; the operator records the store's URI.
    message = json.dumps(
        {
            "digest": digest,
            "artifact": {
                "modelRepository": f"/mnt/artifacts/{digest}/model_repository",
                "report": f"file:///mnt/artifacts/{digest}/report.html",
            },
        }
    )
    done = job(job_name("digits", digest), digest, "succeeded", message)
    deploying = run(model(the_spec, started.status), jobs=(done,))
    artifact = deploying.status.artifact
    assert artifact is not None
    assert artifact.uri == f"s3://artifacts/prod/ml/digits/{digest}/model_repository"
    # The page the Job uploaded beside it, not the Job's emptyDir (gone with its pod).
    assert artifact.report == f"s3://artifacts/prod/ml/digits/{digest}/report.html"
    (deployment,) = [m for m in deploying.apply if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["artifact-pull", "serving-config"]
    assert pod["initContainers"][0]["command"][-2:] == [
        f"s3://artifacts/prod/ml/digits/{digest}",
        f"/mnt/artifact-store/{digest}",
    ]

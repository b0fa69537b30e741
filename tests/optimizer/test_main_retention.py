"""The optimizer run as the Job runs it (the spec document and the environment that
``render_job`` renders), on a small real ONNX model: the retention pass prunes the model's
storage folder as ``storage.retention`` says, and an optimizer whose recipe digest differs
from the operator's refuses to run ("version skew") before touching anything."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from optiserve.api import OptimizedModel, OptimizedModelSpec
from optiserve.digest import optiserve_version, spec_recipe_digest
from optiserve.render.job import EXPECTED_DIGEST_ENV, render_job, spec_document
from optiserve.render.kubernetes import Owner
from optiserve_operator.reconcile import recipe_digest
from optiserve_optimizer.artifact import file_sha256
from tests.optimizer.conftest import make_mlp, make_npz
from tests.optimizer.runs import OptimizerRunner

pytestmark = pytest.mark.models

OWNER = Owner(name="mlp", namespace="ml", uid="uid-mlp")
SERVED = "a" * 64
HOUR = 3600
POD_PATHS = ("OPTISERVE_PVC_ROOT", "OPTISERVE_TERMINATION_LOG")


def model_spec(tmp_path: Path, keep_superseded: int) -> OptimizedModelSpec:
    model = make_mlp(tmp_path / "mlp.onnx")
    eval_npz = make_npz(tmp_path / "eval.npz", 32)
    doc = {
        "apiVersion": "optiserve.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": OWNER.name, "namespace": OWNER.namespace},
        "spec": {
            "source": {"uri": str(model), "format": "onnx"},
            "optimization": {
                "accuracy": {"dataset": str(eval_npz), "metric": "maxAbsError", "maxDrop": 0.5},
                "benchmark": {"batchSizes": [1, 4], "iterations": 3, "warmup": 1, "rounds": 3},
            },
            "storage": {"pvc": "store", "retention": {"keepSuperseded": keep_superseded}},
        },
    }
    return OptimizedModel.model_validate(doc).spec


def job_environment(
    monkeypatch: pytest.MonkeyPatch, spec: OptimizedModelSpec, digest: str, keep: list[str]
) -> None:
    """The optimizer container's environment as the operator renders it, but for the paths
    (PVC root, termination log) that point into the pod."""
    job = render_job(OWNER, spec, digest, image="optimizer:test", keep=keep)
    for var in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        if var["name"].startswith("OPTISERVE_") and var["name"] not in POD_PATHS:
            monkeypatch.setenv(var["name"], var["value"])


def folder(path: Path, age_seconds: float) -> Path:
    (path / "inside").mkdir(parents=True)
    stamp = time.time() - age_seconds
    os.utime(path / "inside", (stamp, stamp))
    os.utime(path, (stamp, stamp))
    return path


def listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_the_job_prunes_superseded_artifacts_and_killed_jobs_work_folders(
    tmp_path: Path,
    optimizer: OptimizerRunner,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = model_spec(tmp_path, keep_superseded=1)
    digest = recipe_digest(OWNER.name, spec)  # what the operator names the Job and folder by
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_document(OWNER.name, OWNER.namespace, spec))
    job_environment(monkeypatch, spec, digest, keep=[SERVED])

    out = tmp_path / "store" / "optiserve" / "ml" / "mlp"
    folder(out / SERVED, 30 * HOUR)  # served: kept however old
    recent, older = f"{1:064x}", f"{2:064x}"
    folder(out / recent, 2 * HOUR)  # the most recent superseded one: kept (keepSuperseded 1)
    folder(out / older, 3 * HOUR)
    stale = folder(out / ".work-0123456789ab-1", 2 * HOUR)  # a killed Job's (deadline 3600 s)
    live = folder(out / ".work-0123456789ab-2", 10)  # maybe a concurrent Job's
    folder(out / "notes", 30 * HOUR)  # not the optimizer's: never touched

    result = optimizer.run(spec_file, out=out).summary
    assert result["ok"] is True and result["digest"] == digest
    assert listing(out) == sorted([".work-0123456789ab-2", SERVED, recent, digest, "notes"])
    assert not stale.exists() and live.exists()
    assert (out / digest / "report.json").is_file()
    # The optimized source's content hash, for a user to compare with the file at the URI now.
    source_hash = file_sha256(tmp_path / "mlp.onnx")
    assert result["artifact"]["sourceSha256"] == source_hash

    logged = capsys.readouterr().err
    assert f"retention: removed {older} (superseded artifact" in logged
    assert "retention: removed .work-0123456789ab-1 (work folder of an ended Job" in logged

    # A later Job, once the new artifact is the served one, with keepSuperseded 0: every
    # other artifact goes (the recipe is the same, so the artifact is reused, not rebuilt).
    again = model_spec(tmp_path, keep_superseded=0)
    job_environment(monkeypatch, again, digest, keep=[digest])
    spec_file.write_text(spec_document(OWNER.name, OWNER.namespace, again))
    assert optimizer.run(spec_file, out=out).summary["reused"] is True
    assert listing(out) == sorted([".work-0123456789ab-2", digest, "notes"])


def test_version_skew_exits_before_any_work(
    tmp_path: Path, optimizer: OptimizerRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = model_spec(tmp_path, keep_superseded=0)
    # An operator of another optiserve version computes another digest for the same spec.
    theirs = spec_recipe_digest(
        OWNER.name, spec.source, spec.optimization, spec.serving, version="0.0.0-other"
    )
    ours = recipe_digest(OWNER.name, spec)
    assert theirs != ours
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_document(OWNER.name, OWNER.namespace, spec))
    job_environment(monkeypatch, spec, theirs, keep=[])
    out = tmp_path / "out"
    superseded = folder(out / f"{3:064x}", 5 * HOUR)  # retention would remove it

    # 2 is the user-error code: podFailurePolicy FailJob
    error = optimizer.run(spec_file, expect=2, out=out).error
    assert error["type"] == "VersionSkewError"
    assert error["message"] == (
        f"version skew: the operator expects recipe digest {theirs}, this optimizer "
        f"(optiserve {optiserve_version()}) computes {ours}; run matching operator and "
        "optimizer images"
    )
    assert superseded.exists() and listing(out) == [superseded.name]  # no work, no pruning
    assert os.environ[EXPECTED_DIGEST_ENV] == theirs

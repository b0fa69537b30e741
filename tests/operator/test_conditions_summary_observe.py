"""Condition merging, the termination-message summary, redaction and child observation."""

from __future__ import annotations

import json

import pytest

from optiserve.api.status import Condition
from optiserve_operator.conditions import Outcome, Wanted, conditions_for, merge_conditions
from optiserve_operator.observe import deployment_state, job_state
from optiserve_operator.summary import SummaryError, failure_text, parse_summary, redact

DIGEST = "ab" * 32


def test_merge_keeps_transition_time_while_status_holds_and_moves_it_on_change() -> None:
    first = merge_conditions([], [Wanted("Ready", "False", "Optimizing")], "t1", 1)
    same = merge_conditions(first, [Wanted("Ready", "False", "RollingOut", "m")], "t2", 2)
    assert same[0].last_transition_time == "t1"
    assert (same[0].reason, same[0].message, same[0].observed_generation) == ("RollingOut", "m", 2)
    flipped = merge_conditions(same, [Wanted("Ready", "True", "Ready")], "t3", 2)
    assert flipped[0].last_transition_time == "t3"


def test_merge_keeps_foreign_conditions_and_orders_ours_first() -> None:
    foreign = Condition(type="Zeta", status="True", reason="X", last_transition_time="t0")
    merged = merge_conditions(
        [foreign],
        [Wanted("Degraded", "False", "AsExpected"), Wanted("Ready", "True", "Ready")],
        "t1",
        1,
    )
    assert [c.type for c in merged] == ["Ready", "Degraded", "Zeta"]


@pytest.mark.parametrize(
    ("phase", "ready", "progressing", "degraded", "reconciling", "stalled"),
    [
        ("Optimizing", "False", "True", "False", "True", "False"),
        ("Deploying", "False", "True", "False", "True", "False"),
        ("Ready", "True", "False", "False", "False", "False"),
        ("Failed", "False", "False", "True", "False", "True"),
    ],
)
def test_conditions_per_phase_follow_kstatus(
    phase: str, ready: str, progressing: str, degraded: str, reconciling: str, stalled: str
) -> None:
    optimized = Wanted("Optimized", "True", "Optimized")
    wanted = {w.type: w.status for w in conditions_for(Outcome(phase, optimized, "Why", "m"))}  # type: ignore[arg-type]
    assert wanted == {
        "Ready": ready,
        "Optimized": "True",
        "Progressing": progressing,
        "Degraded": degraded,
        "Reconciling": reconciling,
        "Stalled": stalled,
    }


def test_summary_flat_snake_case_and_local_path() -> None:
    message = json.dumps(
        {
            "recipe_digest": DIGEST,
            "model_repository": f"/mnt/pvc/store/x/{DIGEST}/model_repository",
            "precision": "fp16",
            "format": "tensorrt_plan",
            "metrics": {"speedup": "3.0x", "size_ratio": 3.9, "unknown_metric": 1},
            "candidates": [{"name": "a", "latency_ms": 1.0}, {"no": "name"}],
        }
    )
    summary = parse_summary(message, DIGEST, "pvc://store/default")
    assert summary.artifact.uri == f"pvc://store/x/{DIGEST}/model_repository"
    assert (summary.artifact.precision, summary.artifact.format) == ("fp16", "tensorrt_plan")
    assert summary.metrics is not None and summary.metrics.size_ratio == 3.9
    assert [c.name for c in summary.candidates] == ["a"]


def test_summary_without_location_uses_the_default_uri() -> None:
    summary = parse_summary(json.dumps({"precision": "int8"}), DIGEST, "pvc://store/d")
    assert summary.artifact.uri == "pvc://store/d" and summary.artifact.digest == DIGEST


@pytest.mark.parametrize(
    "message", ["", "   ", "Traceback: boom", "[1, 2]", json.dumps({"digest": "cd" * 32})]
)
def test_unusable_summaries_are_refused(message: str) -> None:
    with pytest.raises(SummaryError):
        parse_summary(message, DIGEST, "pvc://store/d")


def test_redact_removes_credentials_and_bounds_length() -> None:
    text = redact("s3://AKIA:secretkey@bucket/x https://h/p?sig=zzz&a=1 Authorization: Bearer tkn")
    assert "secretkey" not in text and "zzz" not in text and "tkn" not in text
    assert "bucket/x" in text and "a=1" in text
    assert len(redact("x" * 5000)) == 1024


def test_failure_text_prefers_the_error_field() -> None:
    assert failure_text(json.dumps({"error": "accuracy drop 0.2 > 0.01"})) == (
        "accuracy drop 0.2 > 0.01"
    )
    assert failure_text("plain\nlog tail") == "plain log tail"
    optimizer_error = {
        "ok": False,
        "error": {"pass": "gate", "message": "drop", "type": "GateError"},
    }
    assert failure_text(json.dumps(optimizer_error)) == "GateError in gate: drop"


def test_summary_as_the_optimizer_writes_it() -> None:
    message = json.dumps(
        {
            "ok": True,
            "reused": False,
            "digest": DIGEST,
            "folder": f"/tmp/elsewhere/{DIGEST}",
            "artifact": {
                "digest": f"sha256:{DIGEST}",
                "uri": f"pvc://store/optiserve/{DIGEST}/model_repository/",
                "precision": "int8",
                "format": "onnx",
                "candidate": "int8-static",
                "report": f"pvc://store/optiserve/{DIGEST}/report.html",
            },
            "metrics": {"speedup": "1.8x", "accuracyDrop": 0.004},
            "candidates": [
                {"name": "int8-static", "latencyMs": 0.4, "passed": True, "chosen": True}
            ],
        }
    )
    summary = parse_summary(message, DIGEST, "pvc://store/default")
    assert summary.artifact.uri == f"pvc://store/optiserve/{DIGEST}/model_repository/"
    assert summary.artifact.candidate == "int8-static"
    assert summary.artifact.report == f"pvc://store/optiserve/{DIGEST}/report.html"
    assert summary.candidates[0].latency_ms == 0.4 and summary.candidates[0].chosen
    local = message.replace(f"pvc://store/optiserve/{DIGEST}", f"file:///tmp/x/{DIGEST}")
    from_elsewhere = parse_summary(local, DIGEST, "pvc://store/default").artifact
    assert from_elsewhere.uri == "pvc://store/default"
    assert from_elsewhere.report is None  # a page no server pod can reach is not named


def test_summary_carries_the_serving_cost_and_drops_an_unreadable_one() -> None:
    cost = {
        "peakRssBytes": 500_000_000,
        "runtimeRssBytes": 60_000_000,
        "cpuSecondsPerInference": 0.0012,
        "batch": 64,
        "threads": 4,
        "runtime": "onnxruntime 1.23.2",
        "futureField": 1,  # a newer optimizer's extra key is ignored, not fatal
    }
    message = {"digest": DIGEST, "artifact": {"uri": "pvc://s/x", "servingCost": cost}}
    artifact = parse_summary(json.dumps(message), DIGEST, "pvc://s/d").artifact
    assert artifact.serving_cost is not None
    assert artifact.serving_cost.model_rss_bytes == 440_000_000
    assert artifact.serving_cost.batch == 64
    broken = {**message, "artifact": {"uri": "pvc://s/x", "servingCost": {"peakRssBytes": -1}}}
    artifact = parse_summary(json.dumps(broken), DIGEST, "pvc://s/d").artifact
    assert artifact.uri == "pvc://s/x" and artifact.serving_cost is None


def test_summary_names_the_baseline_the_spread_and_failed_candidates() -> None:
    measured = {"cpu": "AMD EPYC", "instructionSets": ["avx2", "avx512_vnni"], "threads": 2}
    metrics = {
        "baseline": "pytorch-torchscript",
        "speedup": "2.41x",
        "speedupRange": "2.30x-2.55x",
        "speedupVsOnnxruntime": "1.10x",
        "measured": {**measured, "loadAverage": 1.2, "rounds": 5, "batch": 32},
    }
    candidates = [
        {"name": "int8-static", "speedup": "2.41x (2.30x-2.55x)", "passed": True, "chosen": True},
        {"name": "pruned-structured", "failed": True, "reason": "failed in prune: no chain"},
    ]
    message = json.dumps(
        {"ok": True, "digest": DIGEST, "metrics": metrics, "candidates": candidates}
    )
    summary = parse_summary(message, DIGEST, "pvc://store/d")
    assert summary.metrics is not None
    assert (summary.metrics.baseline, summary.metrics.speedup) == ("pytorch-torchscript", "2.41x")
    assert summary.metrics.speedup_range == "2.30x-2.55x"
    assert summary.metrics.measured is not None and summary.metrics.measured.threads == 2
    failed = summary.candidates[1]
    assert failed.failed and not failed.passed and "no chain" in failed.reason
    # conditions an older or newer optimizer wrote differently do not cost the ratio
    odd = json.dumps({"digest": DIGEST, "metrics": {**metrics, "measured": {"threads": "two"}}})
    kept = parse_summary(odd, DIGEST, "pvc://store/d").metrics
    assert kept is not None and kept.speedup == "2.41x" and kept.measured is None


def pod(phase: str, reason: str, message: str, exit_code: int, finished: str) -> dict[str, object]:
    terminated = {
        "reason": reason,
        "message": message,
        "exitCode": exit_code,
        "finishedAt": finished,
    }
    return {
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "optimizer", "state": {"terminated": terminated}}],
        }
    }


def a_job(condition: str | None, reason: str = "") -> dict[str, object]:
    conditions = [{"type": condition, "status": "True", "reason": reason}] if condition else []
    return {
        "metadata": {"name": "j", "annotations": {"optiserve.io/recipe-digest": DIGEST}},
        "status": {"conditions": conditions},
    }


def test_job_state_reads_the_summary_of_the_succeeded_pod() -> None:
    pods = [
        pod("Failed", "Error", "first try", 1, "t1"),
        pod("Succeeded", "Completed", "{}", 0, "t2"),
    ]
    state = job_state(a_job("Complete"), pods)
    assert (state.phase, state.message, state.digest) == ("succeeded", "{}", DIGEST)


def test_job_state_reports_the_latest_failed_pod() -> None:
    pods = [pod("Failed", "Error", "first", 1, "t1"), pod("Failed", "OOMKilled", "", 137, "t2")]
    state = job_state(a_job("Failed", "BackoffLimitExceeded"), pods)
    assert (state.phase, state.failure_reason, state.failure_message) == (
        "failed",
        "OOMKilled",
        "exit code 137",
    )
    imaged = pod("Failed", "Error", "", 1, "t3")
    imaged["spec"] = {"containers": [{"name": "optimizer", "image": "ghcr.io/x/optimizer:1"}]}
    state = job_state(a_job("Failed", "BackoffLimitExceeded"), [*pods, imaged])
    assert state.failure_message == "exit code 1 in image ghcr.io/x/optimizer:1"
    no_pod = job_state(a_job("Failed", "DeadlineExceeded"), [])
    assert no_pod.failure_reason == "DeadlineExceeded"
    assert job_state(a_job(None), []).phase == "active"


def test_deployment_state_rollout_and_deadline() -> None:
    dep = {
        "metadata": {"generation": 2, "annotations": {"optiserve.io/failed-rollout": "x/"}},
        "spec": {
            "replicas": 2,
            "template": {"metadata": {"annotations": {"optiserve.io/artifact-digest": DIGEST}}},
        },
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": 2,
            "readyReplicas": 3,
            "availableReplicas": 3,
            "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ],
        },
    }
    state = deployment_state(dep)
    assert state.artifact_digest == DIGEST and state.failed_rollout == "x/"
    assert state.deadline_exceeded and not state.rolled_out  # an old pod is still there
    dep["status"]["replicas"] = 2
    assert deployment_state(dep).rolled_out

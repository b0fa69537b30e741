"""serving.tuning in status: the Job's search summary as status.serving.tuning and the
ServingTuned condition (budget met, missed with the numbers, not run, no longer asked)."""

from __future__ import annotations

import json
from typing import Any

from optiserve.render.kubernetes import job_name
from optiserve_operator.reconcile import recipe_digest
from tests.operator.helpers import OWNER, condition, job, model, run, spec, summary_message

SETTINGS = {
    "maxBatchSize": 16,
    "preferredBatchSizes": [8],
    "maxQueueDelayMicroseconds": 1000,
    "instanceCount": 2,
}


def tuned_message(digest: str, **tuning: Any) -> str:
    summary = json.loads(summary_message(digest))
    summary["artifact"]["tuning"] = {"latencyBudgetMs": 50.0, "trials": 7, **tuning}
    return json.dumps(summary)


def deploy(message_of: Any) -> Any:
    the_spec = spec()
    digest = recipe_digest(OWNER.name, the_spec)
    started = run(model(the_spec))
    done = job(job_name("digits", digest), digest, "succeeded", message_of(digest))
    return run(model(the_spec, started.status), jobs=(done,), now="2026-01-01T00:05:00Z")


def test_a_budget_met_shows_in_status_serving_and_the_condition() -> None:
    result = deploy(
        lambda d: tuned_message(
            d,
            outcome="tuned",
            settings=SETTINGS,
            throughputRps=1400.5,
            p99Ms=41.2,
            message="maxBatch 16 ...: 1400.5 req/s at p99 41.20 ms",
        )
    )
    serving = result.status.serving
    assert serving is not None and serving.tuning is not None
    assert serving.tuning.outcome == "tuned" and serving.tuning.trials == 7
    assert serving.tuning.settings is not None and serving.tuning.settings.instance_count == 2
    assert serving.tuning.throughput_rps == 1400.5 and serving.tuning.p99_ms == 41.2
    assert condition(result, "ServingTuned") == ("True", "WithinBudget")


def test_a_missed_budget_is_a_false_condition_with_the_numbers() -> None:
    message = "no trial met the budget (p99 <= 50 ms); best effort ...: 900.0 req/s at p99 61.00 ms"
    result = deploy(
        lambda d: tuned_message(
            d, outcome="bestEffort", settings=SETTINGS, throughputRps=900, p99Ms=61, message=message
        )
    )
    assert condition(result, "ServingTuned") == ("False", "BudgetMissed")
    found = next(c for c in result.status.conditions if c.type == "ServingTuned")
    assert "p99 61.00 ms" in found.message and "p99 <= 50 ms" in found.message
    assert result.status.phase == "Deploying"  # a budget miss does not stop serving


def test_a_search_that_could_not_run_says_why_and_secrets_stay_out() -> None:
    why = "serving with the spec's settings: TritonNotFoundError at https://u:tok@host/x"
    result = deploy(lambda d: tuned_message(d, outcome="untuned", message=why))
    assert condition(result, "ServingTuned") == ("False", "NotTuned")
    found = next(c for c in result.status.conditions if c.type == "ServingTuned")
    assert "TritonNotFoundError" in found.message and "tok" not in found.message


def test_no_tuning_no_condition_and_an_old_verdict_does_not_linger() -> None:
    plain = deploy(summary_message)
    assert all(c.type != "ServingTuned" for c in plain.status.conditions)
    assert plain.status.serving is not None and plain.status.serving.tuning is None

    tuned = deploy(lambda d: tuned_message(d, outcome="tuned", settings=SETTINGS, message="ok"))
    # The spec changes (here: its quantization; in life, tuning taken out): a new recipe, a new
    # Job, an artifact the Job did not tune.
    changed = spec(precision="int8", method="dynamic")
    digest = recipe_digest(OWNER.name, changed)
    done = job(job_name("digits", digest), digest, "succeeded", summary_message(digest))
    later = run(model(changed, tuned.status, generation=2), jobs=(done,))
    assert later.status.artifact is not None and later.status.artifact.digest == digest
    assert condition(later, "ServingTuned") == ("False", "NotRequested")


def tuned_events(result: Any) -> list[tuple[str, str, str]]:
    reasons = {"WithinBudget", "BudgetMissed", "NotTuned", "NotRequested"}
    return [(e.type, e.reason, e.message) for e in result.events if e.reason in reasons]


def test_each_change_of_the_verdict_is_one_event_and_a_repeated_pass_none() -> None:
    met = deploy(lambda d: tuned_message(d, outcome="tuned", settings=SETTINGS, message="fast"))
    assert tuned_events(met) == [("Normal", "WithinBudget", "fast")]
    # The same verdict found again (the next pass, a resync): no second event.
    again = run(model(spec(), met.status), dep=None, now="2026-01-01T00:06:00Z")
    assert condition(again, "ServingTuned") == ("True", "WithinBudget")
    assert tuned_events(again) == []


def test_a_missed_budget_or_a_search_that_could_not_run_is_a_warning_without_secrets() -> None:
    missed = deploy(lambda d: tuned_message(d, outcome="bestEffort", message="p99 61 ms"))
    assert tuned_events(missed) == [("Warning", "BudgetMissed", "p99 61 ms")]
    why = "TritonNotFoundError at https://u:tok@host/x"
    untuned = deploy(lambda d: tuned_message(d, outcome="untuned", message=why))
    [(kind, reason, message)] = tuned_events(untuned)
    assert (kind, reason) == ("Warning", "NotTuned")
    assert "TritonNotFoundError" in message and "tok" not in message


def test_a_new_verdict_says_so_once_and_tuning_taken_out_is_a_normal_event() -> None:
    tuned = deploy(lambda d: tuned_message(d, outcome="tuned", settings=SETTINGS, message="ok"))
    changed = spec(precision="int8", method="dynamic")
    digest = recipe_digest(OWNER.name, changed)
    # A newly tuned artifact within budget again, with new numbers: one event with them.
    retuned = job(
        job_name("digits", digest),
        digest,
        "succeeded",
        tuned_message(digest, outcome="tuned", settings=SETTINGS, message="faster"),
    )
    later = run(model(changed, tuned.status, generation=2), jobs=(retuned,))
    assert tuned_events(later) == [("Normal", "WithinBudget", "faster")]
    # Then an artifact nobody tuned: the old verdict goes, said once, as a Normal event.
    plain = spec(precision="fp32")
    plain_digest = recipe_digest(OWNER.name, plain)
    done = job(
        job_name("digits", plain_digest), plain_digest, "succeeded", summary_message(plain_digest)
    )
    untuned = run(model(plain, later.status, generation=3), jobs=(done,))
    assert tuned_events(untuned) == [("Normal", "NotRequested", "serving.tuning is not set")]
    assert tuned_events(run(model(plain, untuned.status, generation=3), jobs=(done,))) == []

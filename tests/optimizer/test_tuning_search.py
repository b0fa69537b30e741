"""The tuning search as pure functions: next trial, winner, budget miss, merge with the spec."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from optiserve.api.serving import ServingSpec
from optiserve.api.tuning import TunedSettings, TuningSpec, merge_tuned, settings_of
from optiserve_optimizer.tuning.space import (
    Config,
    Goal,
    Space,
    Trial,
    build_space,
    choose,
    fits_in_time,
    incumbent,
    neighbours,
    next_config,
    preferred_for,
    summarize,
)

HAND = {"maxBatchSize": 64, "dynamicBatching": {"maxQueueDelayMicroseconds": 1000}}


def spec(**tuning: object) -> ServingSpec:
    return ServingSpec.model_validate({**HAND, "tuning": {"latencyBudgetMs": 50, **tuning}})


def space_of(serving: ServingSpec) -> Space:
    assert serving.tuning is not None
    return build_space(settings_of(serving), serving.tuning)


def run_search(
    serving: ServingSpec, measure: Callable[[Config], Trial], max_trials: int = 64
) -> list[Trial]:
    assert serving.tuning is not None
    space, goal = space_of(serving), Goal.of(serving.tuning)
    trials: list[Trial] = []
    while (config := next_config(space, trials, goal, max_trials)) is not None:
        trials.append(measure(config))
    return trials


def test_space_starts_at_the_spec_and_stops_batch_sizes_at_the_concurrency() -> None:
    space = space_of(spec(concurrency=[4, 16]))
    assert space.start == Config(64, (), 1000, 1)
    # 64 is the spec's own; otherwise powers of two up to 16 requests in flight.
    assert space.batch_sizes == (1, 2, 4, 8, 16, 64)
    assert space.delays_us == (0, 100, 500, 1000, 2000, 5000, 10000)
    assert space.instances == (1, 2)


def test_queue_delays_stay_under_half_the_budget() -> None:
    space = space_of(spec(latencyBudgetMs=2))
    assert max(d for d in space.delays_us if d != 1000) <= 1000  # budget/2 = 1000 us
    assert 2000 not in space.delays_us


def test_settings_left_out_of_the_search_keep_one_value() -> None:
    space = space_of(spec(search=["instanceCount"], maxInstanceCount=3))
    assert space.batch_sizes == (64,) and space.delays_us == (1000,)
    assert space.instances == (1, 2, 3) and not space.search_preferred


def test_first_trial_is_the_spec_then_neighbours_of_the_incumbent() -> None:
    serving = spec()
    space, goal = space_of(serving), Goal(50)
    assert next_config(space, [], goal, 12) == space.start
    first = Trial(space.start, throughput_rps=500, p99_ms=20)
    # Meeting the budget: push throughput first (no bigger batch than 64 here: more instances).
    assert next_config(space, [first], goal, 12) == Config(64, (), 1000, 2)


def test_missing_the_budget_tries_a_shorter_wait_first() -> None:
    space, goal = space_of(spec()), Goal(50)
    first = Trial(space.start, throughput_rps=500, p99_ms=80)
    assert next_config(space, [first], goal, 12) == Config(64, (), 500, 1)


def test_noise_does_not_move_the_search_but_a_clear_gain_does() -> None:
    goal = Goal(50)
    a = Trial(Config(8, (), 0, 1), throughput_rps=1000, p99_ms=10)
    b = Trial(Config(16, (), 0, 1), throughput_rps=1030, p99_ms=10)  # +3%: noise
    c = Trial(Config(16, (), 0, 2), throughput_rps=1100, p99_ms=10)  # +10%
    assert incumbent([a, b], goal) is a
    assert incumbent([a, b, c], goal) is c
    # The winner is still the highest throughput within the budget.
    assert choose([a, b], goal) == (b, True)


def test_search_climbs_to_the_optimum_and_stops_there() -> None:
    # Throughput grows with batch size up to 16 and with a second instance; p99 fine.
    def measure(config: Config) -> Trial:
        batch_gain = min(config.max_batch_size, 16) / 16
        rate = 400 + 600 * batch_gain + 300 * (config.instances - 1) - config.delay_us / 100
        return Trial(config, throughput_rps=rate, p99_ms=20)

    trials = run_search(spec(maxBatchSizeLimit=64, concurrency=[16]), measure)
    winner, met = choose(trials, Goal(50))
    assert met and winner is not None
    assert winner.config.instances == 2 and winner.config.max_batch_size >= 16
    assert len(trials) < 20  # far from the grid (6 x 7 x 2 x 2 = 168 configs)
    assert len({t.config for t in trials}) == len(trials)  # nothing measured twice


def test_search_ends_at_max_trials() -> None:
    trials = run_search(spec(), lambda c: Trial(c, throughput_rps=100 * c.instances, p99_ms=1), 3)
    assert len(trials) == 3


def test_a_failed_spec_config_ends_the_search() -> None:
    trials = run_search(spec(), lambda c: Trial(c, failure="load failed: boom"))
    assert len(trials) == 1
    summary = summarize(trials, Goal(50), 3.0, "search ended early")
    assert summary.outcome == "untuned" and summary.settings is None
    assert "load failed: boom" in summary.message


def test_no_trial_meets_the_budget_gives_the_lowest_p99_as_best_effort() -> None:
    goal = Goal(5)
    trials = [
        Trial(Config(64, (), 1000, 1), throughput_rps=900, p99_ms=30),
        Trial(Config(64, (), 500, 1), throughput_rps=800, p99_ms=12),
        Trial(Config(32, (), 500, 1), throughput_rps=950, p99_ms=25),
    ]
    winner, met = choose(trials, goal)
    assert not met and winner is trials[1]
    summary = summarize(trials, goal, 12.0, "searched to a local optimum")
    assert summary.outcome == "bestEffort"
    assert summary.p99_ms == 12 and summary.throughput_rps == 800
    assert "no trial met the budget (p99 <= 5 ms)" in summary.message
    assert "p99 12.00 ms" in summary.message
    assert summary.spec_throughput_rps == 900  # the spec's own settings, trial 1


def test_target_throughput_is_part_of_the_goal() -> None:
    goal = Goal(50, target_rps=1000)
    fast = Trial(Config(8, (), 0, 1), throughput_rps=1200, p99_ms=40)
    slow = Trial(Config(4, (), 0, 1), throughput_rps=900, p99_ms=10)
    assert fast.meets(goal) and not slow.meets(goal)
    assert choose([slow, fast], goal) == (fast, True)


def test_errors_under_load_never_win() -> None:
    goal = Goal(50)
    broken = Trial(Config(8, (), 0, 1), throughput_rps=5000, p99_ms=1, errors=3, failure="x")
    fine = Trial(Config(4, (), 0, 1), throughput_rps=100, p99_ms=10)
    assert choose([broken, fine], goal) == (fine, True)


def test_preferred_batch_is_what_each_instance_can_fill() -> None:
    assert preferred_for(Config(64, (), 0, 1), 16) == (16,)
    assert preferred_for(Config(64, (), 0, 2), 16) == (8,)
    assert preferred_for(Config(4, (), 0, 1), 16) == (4,)
    assert preferred_for(Config(64, (), 0, 3), 16) == (4,)  # 5 rounds down
    space = space_of(spec())
    toggles = [c for c in neighbours(space, Config(64, (), 1000, 1), True) if c.preferred]
    assert toggles == [Config(64, (16,), 1000, 1)]


def test_time_bound() -> None:
    assert fits_in_time(100, 20, 120)
    assert not fits_in_time(101, 20, 120)


def test_merge_takes_only_the_searched_settings() -> None:
    serving = ServingSpec.model_validate(
        {
            "maxBatchSize": 32,
            "dynamicBatching": {"maxQueueDelayMicroseconds": 2000, "preferredBatchSizes": [8]},
            "responseCache": {"enabled": True},
            "tuning": {"latencyBudgetMs": 10, "search": ["maxBatchSize", "instanceCount"]},
        }
    )
    tuned = TunedSettings(
        max_batch_size=16,
        preferred_batch_sizes=[16],
        max_queue_delay_microseconds=0,
        instance_count=2,
    )
    merged = merge_tuned(serving, tuned)
    assert merged.max_batch_size == 16 and merged.instance_group.count == 2
    # Not searched: the spec's values win.
    assert merged.dynamic_batching.max_queue_delay_microseconds == 2000
    assert merged.dynamic_batching.preferred_batch_sizes == [8]
    assert merged.response_cache.enabled
    assert merge_tuned(serving, None) is serving


def test_merge_drops_pinned_preferred_sizes_above_a_smaller_tuned_batch() -> None:
    serving = ServingSpec.model_validate(
        {
            "maxBatchSize": 32,
            "dynamicBatching": {"preferredBatchSizes": [8, 32]},
            "tuning": {"latencyBudgetMs": 10, "search": ["maxBatchSize"]},
        }
    )
    tuned = TunedSettings(
        max_batch_size=16,
        preferred_batch_sizes=[],
        max_queue_delay_microseconds=0,
        instance_count=1,
    )
    assert merge_tuned(serving, tuned).dynamic_batching.preferred_batch_sizes == [8]


@pytest.mark.parametrize(
    "bad",
    [
        {"latencyBudgetMs": 0},
        {"latencyBudgetMs": 10, "concurrency": []},
        {"latencyBudgetMs": 10, "maxSeconds": 5},
        {"latencyBudgetMs": 10, "search": ["threads"]},
        {"latencyBudgetMs": 10, "trialSeconds": 60},
        {"concurrency": [4]},
    ],
)
def test_bad_tuning_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TuningSpec.model_validate(bad)


def test_tuning_is_off_by_default() -> None:
    assert ServingSpec().tuning is None

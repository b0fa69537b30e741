"""The search itself, pure: which config to measure next, which one wins, what to tell the user.

In the spirit of Triton Model Analyzer's quick search (hill climbing over a coordinate space
of batch size and instance count, stopping once no neighbour improves), not a grid:

* the first trial is the spec's own settings (the hand baseline, measured in the same run);
* the next one is an unmeasured neighbour of the *incumbent*: one step along one setting
  (the next batch size up or down, one instance more or less, the next queue delay, the
  preferred batch size on or off), most promising direction first;
* a trial replaces the incumbent only when it is better by more than ``MIN_GAIN`` (noise on
  a shared machine must not send the search wandering);
* the search ends when every neighbour of the incumbent is measured (a local optimum:
  Model Analyzer's early exit), or at ``maxTrials``, or when the time left (``maxSeconds``)
  cannot hold another trial.

"Better" depends on the budget. A trial meets the goal when it answered every request, its
p99 (the worst over the concurrency levels) is within the budget and it reaches the target
throughput, if one is set. A trial meeting the goal beats one that does not; between two that
do, the higher throughput wins; between two that do not, the lower p99 (nearer the budget).
The packaged winner is the highest-throughput trial meeting the goal, or, when none does, the
best-effort trial with the lowest p99.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from optiserve.api.tuning import TunedSettings, TuningSpec, TuningSummary

MIN_GAIN = 0.05  # a neighbour must beat the incumbent by 5% to move the search
QUEUE_DELAYS_US = (0, 100, 500, 1000, 2000, 5000, 10_000)


@dataclass(frozen=True, order=True)
class Config:
    """One point of the search space (hashable, unlike the API model)."""

    max_batch_size: int
    preferred: tuple[int, ...]
    delay_us: int
    instances: int

    @classmethod
    def of(cls, settings: TunedSettings) -> Config:
        return cls(
            settings.max_batch_size,
            tuple(settings.preferred_batch_sizes),
            settings.max_queue_delay_microseconds,
            settings.instance_count,
        )

    def settings(self) -> TunedSettings:
        return TunedSettings(
            max_batch_size=self.max_batch_size,
            preferred_batch_sizes=list(self.preferred),
            max_queue_delay_microseconds=self.delay_us,
            instance_count=self.instances,
        )


@dataclass(frozen=True)
class Goal:
    latency_budget_ms: float
    target_rps: float | None = None

    @classmethod
    def of(cls, tuning: TuningSpec) -> Goal:
        return cls(tuning.latency_budget_ms, tuning.target_requests_per_second)


@dataclass(frozen=True)
class Space:
    """The values each setting may take; a setting kept out of the search has one."""

    batch_sizes: tuple[int, ...]
    delays_us: tuple[int, ...]
    instances: tuple[int, ...]
    search_preferred: bool
    top_concurrency: int
    start: Config


@dataclass(frozen=True)
class Trial:
    """One config as measured (throughput at the highest concurrency, p99 the worst)."""

    config: Config
    throughput_rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    failure: str | None = None  # the config could not be loaded or measured
    details: dict[str, object] = field(default_factory=dict, compare=False)

    def meets(self, goal: Goal) -> bool:
        return (
            self.failure is None
            and self.errors == 0
            and self.throughput_rps > 0
            and self.p99_ms <= goal.latency_budget_ms
            and (goal.target_rps is None or self.throughput_rps >= goal.target_rps)
        )


def _powers_of_two(up_to: int) -> list[int]:
    values, size = [], 1
    while size <= up_to:
        values.append(size)
        size *= 2
    return values


def build_space(start: TunedSettings, tuning: TuningSpec, batched: bool = True) -> Space:
    """The search space around the spec's settings ``start``.

    Batch sizes above the highest concurrency cannot fill (a closed loop never has more
    requests in flight), so they stop at the first power of two that holds it. Queue delays
    stop at half the budget: a longer wait alone would spend most of it.
    """
    begin = Config.of(start)
    searched: set[str] = set(tuning.search)
    top = max(tuning.concurrency)
    if not batched or begin.max_batch_size == 0:
        return Space(
            (begin.max_batch_size,),
            (begin.delay_us,),
            _instances(begin, tuning, searched),
            False,
            top,
            begin,
        )
    cap = min(tuning.max_batch_size_limit, 1 << max(0, (top - 1).bit_length()))
    batches = set(_powers_of_two(cap)) if "maxBatchSize" in searched else set()
    delays: set[int] = set()
    if "maxQueueDelayMicroseconds" in searched:
        delays = {d for d in QUEUE_DELAYS_US if d <= tuning.latency_budget_ms * 500}
    return Space(
        tuple(sorted(batches | {begin.max_batch_size})),
        tuple(sorted(delays | {begin.delay_us})),
        _instances(begin, tuning, searched),
        "preferredBatchSizes" in searched,
        top,
        begin,
    )


def _instances(begin: Config, tuning: TuningSpec, searched: set[str]) -> tuple[int, ...]:
    values = set(range(1, tuning.max_instance_count + 1)) if "instanceCount" in searched else set()
    return tuple(sorted(values | {begin.instances}))


def preferred_for(config: Config, concurrency: int) -> tuple[int, ...]:
    """The batch the dynamic batcher can fill: the requests each instance sees in flight,
    rounded down to a power of two, at most the max batch size."""
    per_instance = max(1, concurrency // config.instances)
    size = 1 << (per_instance.bit_length() - 1)
    return (min(size, config.max_batch_size),)


def _step(values: tuple[int, ...], current: int, direction: int) -> int | None:
    """The next value of ``values`` above (1) or below (-1) ``current``."""
    if direction > 0:
        return next((v for v in values if v > current), None)
    return next((v for v in reversed(values) if v < current), None)


def neighbours(space: Space, config: Config, meets_goal: bool) -> list[Config]:
    """One step along one setting from ``config``, most promising first.

    Meeting the goal, the search pushes throughput (bigger batches, more instances, a longer
    wait to fill batches); missing it, it first tries what shortens the tail (a shorter wait,
    smaller batches), then what adds capacity.
    """
    moves: dict[str, Config | None] = {}

    def with_batch(direction: int) -> Config | None:
        size = _step(space.batch_sizes, config.max_batch_size, direction)
        if size is None:
            return None
        preferred = tuple(b for b in config.preferred if b <= size)
        return Config(size, preferred, config.delay_us, config.instances)

    def with_delay(direction: int) -> Config | None:
        delay = _step(space.delays_us, config.delay_us, direction)
        return None if delay is None else Config(*_head(config), delay, config.instances)

    def with_instances(direction: int) -> Config | None:
        count = _step(space.instances, config.instances, direction)
        return None if count is None else Config(*_head(config), config.delay_us, count)

    moves["batch+"] = with_batch(1)
    moves["instances+"] = with_instances(1)
    moves["delay+"] = with_delay(1)
    moves["batch-"] = with_batch(-1)
    moves["delay-"] = with_delay(-1)
    moves["instances-"] = with_instances(-1)
    if space.search_preferred and config.max_batch_size > 1:
        wanted = preferred_for(config, space.top_concurrency)
        toggled = () if config.preferred == wanted else wanted
        moves["preferred"] = Config(
            config.max_batch_size, toggled, config.delay_us, config.instances
        )
    order = (
        ["batch+", "instances+", "delay+", "preferred", "batch-", "delay-", "instances-"]
        if meets_goal
        else ["delay-", "batch-", "instances+", "preferred", "batch+", "delay+", "instances-"]
    )
    found = [moves.get(name) for name in order]
    return [c for c in found if c is not None and c != config]


def _head(config: Config) -> tuple[int, tuple[int, ...]]:
    return config.max_batch_size, config.preferred


def better(trial: Trial, than: Trial, goal: Goal, margin: float = 0.0) -> bool:
    """Whether ``trial`` beats ``than`` (by more than ``margin``, relative)."""
    if trial.failure is not None or trial.throughput_rps <= 0:
        return False
    if than.failure is not None or than.throughput_rps <= 0:
        return True
    meets, other_meets = trial.meets(goal), than.meets(goal)
    if meets != other_meets:
        return meets
    if meets:
        return trial.throughput_rps > than.throughput_rps * (1 + margin)
    return trial.p99_ms < than.p99_ms * (1 - margin)


def incumbent(trials: Sequence[Trial], goal: Goal) -> Trial | None:
    """The trial the search explores around: replaced only by a clearly better one."""
    current: Trial | None = None
    for trial in trials:
        if current is None or better(trial, current, goal, MIN_GAIN):
            current = trial
    return current


def choose(trials: Sequence[Trial], goal: Goal) -> tuple[Trial | None, bool]:
    """(the winner, whether it meets the goal): the highest throughput within the goal, else
    the lowest p99 of those that ran; ``(None, False)`` when no trial ran at all."""
    meeting = [t for t in trials if t.meets(goal)]
    if meeting:
        return max(meeting, key=lambda t: t.throughput_rps), True
    ran = [t for t in trials if t.failure is None and t.throughput_rps > 0]
    if ran:
        return min(ran, key=lambda t: t.p99_ms), False
    return None, False


def next_config(
    space: Space, trials: Sequence[Trial], goal: Goal, max_trials: int
) -> Config | None:
    """The config to measure next, or None when the search is done."""
    if len(trials) >= max_trials:
        return None
    if not trials:
        return space.start
    center = incumbent(trials, goal)
    if center is None or center.failure is not None:
        return None  # the spec's own config failed: nothing to climb from
    measured = {t.config for t in trials}
    for candidate in neighbours(space, center.config, center.meets(goal)):
        if candidate not in measured:
            return candidate
    return None


def fits_in_time(elapsed_s: float, trial_estimate_s: float, max_seconds: float) -> bool:
    """Whether one more trial, at the longest one seen so far, ends within the bound."""
    return elapsed_s + trial_estimate_s <= max_seconds


def summarize(
    trials: Sequence[Trial],
    goal: Goal,
    seconds: float,
    stopped: str,
    error: str | None = None,
) -> TuningSummary:
    """The status summary: what is packaged and why, with the numbers."""
    winner, met = choose(trials, goal)
    spec_trial = trials[0] if trials and trials[0].failure is None else None
    common = {
        "latency_budget_ms": goal.latency_budget_ms,
        "trials": len(trials),
        "seconds": round(seconds, 1),
        "spec_throughput_rps": round(spec_trial.throughput_rps, 1) if spec_trial else None,
        "spec_p99_ms": round(spec_trial.p99_ms, 2) if spec_trial else None,
    }
    if winner is None:
        why = error or (trials[0].failure if trials else None) or "no trial ran"
        return TuningSummary(
            outcome="untuned",
            message=f"serving with the spec's settings: {why}"[:1024],
            **common,
        )
    numbers = f"{winner.throughput_rps:.1f} req/s at p99 {winner.p99_ms:.2f} ms"
    target = f", >= {goal.target_rps:g} req/s" if goal.target_rps is not None else ""
    if met:
        message = f"{winner.config.settings().describe()}: {numbers} (budget p99 <= "
        message += f"{goal.latency_budget_ms:g} ms{target}); {stopped}"
    else:
        message = (
            f"no trial met the budget (p99 <= {goal.latency_budget_ms:g} ms{target}); "
            f"best effort {winner.config.settings().describe()}: {numbers}; {stopped}"
        )
    if error:
        message += f"; {error}"
    return TuningSummary(
        outcome="tuned" if met else "bestEffort",
        settings=winner.config.settings(),
        throughput_rps=round(winner.throughput_rps, 1),
        p99_ms=round(winner.p99_ms, 2),
        message=message[:1024],
        **common,
    )

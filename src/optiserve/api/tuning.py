"""``spec.serving.tuning`` and ``status.serving.tuning``: Triton's batching and instance
settings searched on the real server for a p99 latency budget.

Off unless ``serving.tuning`` is set. The Job then serves the chosen artifact with a local
``tritonserver``, measures a few ``config.pbtxt`` variants under load and packages the one with
the highest throughput whose p99 stays within the budget (the search: ``optiserve_optimizer
.tuning``). Only the settings listed in ``tuning.search`` are searched; every other serving
setting is the spec's, and :func:`merge_tuned` is the one place that combines the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import Field

from optiserve.api.base import ApiModel

if TYPE_CHECKING:
    from optiserve.api.serving import ServingSpec

TunableSetting = Literal[
    "maxBatchSize", "preferredBatchSizes", "maxQueueDelayMicroseconds", "instanceCount"
]
TUNABLE: tuple[TunableSetting, ...] = (
    "maxBatchSize",
    "preferredBatchSizes",
    "maxQueueDelayMicroseconds",
    "instanceCount",
)
TuningOutcome = Literal["tuned", "bestEffort", "untuned"]


class TuningSpec(ApiModel):
    """Search Triton's batching and instance settings for a p99 latency budget."""

    latency_budget_ms: float = Field(
        gt=0, le=600_000, description="p99 latency (client-side, milliseconds) to stay within."
    )
    concurrency: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [16],
        min_length=1,
        max_length=4,
        description="Requests kept in flight while measuring; a config must hold the budget "
        "at every level listed, and is scored by its throughput at the highest.",
    )
    target_requests_per_second: float | None = Field(
        None,
        gt=0,
        le=1e7,
        description="Optional: a config must also reach this throughput to count as meeting "
        "the goal.",
    )
    search: list[TunableSetting] = Field(
        default_factory=lambda: list(TUNABLE),
        max_length=4,
        description="Settings the search may change; the others stay as the spec sets them.",
    )
    max_trials: int = Field(12, ge=1, le=64, description="Most configs measured.")
    max_seconds: int = Field(
        300, ge=30, le=3600, description="Bound on the whole search, server start included."
    )
    trial_seconds: int = Field(3, ge=1, le=10, description="Measured window of one trial.")
    warmup_seconds: int = Field(1, ge=0, le=5, description="Load before each window; not counted.")
    max_instance_count: int = Field(2, ge=1, le=16, description="Most model instances tried.")
    max_batch_size_limit: int = Field(64, ge=1, le=4096, description="Largest maxBatchSize tried.")


class TunedSettings(ApiModel):
    """The searched settings of one config."""

    max_batch_size: int = Field(ge=0, le=4096, description="Triton's max_batch_size.")
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=list, max_length=16, description="The dynamic batcher's preferred sizes."
    )
    max_queue_delay_microseconds: int = Field(
        ge=0, le=10_000_000, description="How long a request may wait for a batch."
    )
    instance_count: int = Field(ge=1, le=64, description="Model instances per server.")

    def describe(self) -> str:
        preferred = ",".join(str(b) for b in self.preferred_batch_sizes) or "-"
        return (
            f"maxBatch {self.max_batch_size}, preferred {preferred}, "
            f"delay {self.max_queue_delay_microseconds}us, instances {self.instance_count}"
        )


class TuningSummary(ApiModel):
    """What the search chose, and how it measured (the report holds every trial)."""

    outcome: TuningOutcome = Field(
        description="tuned: a config met the budget; bestEffort: none did, the one nearest "
        "it is used; untuned: the search could not run, the spec's settings are used."
    )
    settings: TunedSettings | None = Field(None, description="The settings packaged.")
    latency_budget_ms: float = Field(ge=0, description="The p99 budget searched for.")
    throughput_rps: float | None = Field(None, ge=0, description="Of the chosen config.")
    p99_ms: float | None = Field(None, ge=0, description="Of the chosen config.")
    spec_throughput_rps: float | None = Field(
        None, ge=0, description="The spec's own settings, measured in the same search."
    )
    spec_p99_ms: float | None = Field(None, ge=0, description="The spec's own settings' p99.")
    trials: int = Field(0, ge=0, description="Configs measured.")
    seconds: float = Field(0, ge=0, description="How long the search took.")
    message: str = Field("", max_length=1024, description="Why, for a person.")


Serving = TypeVar("Serving", bound="ServingSpec")


def settings_of(serving: ServingSpec) -> TunedSettings:
    """The searched settings as ``serving`` has them (the search's first trial)."""
    batching = serving.dynamic_batching
    return TunedSettings(
        max_batch_size=serving.max_batch_size,
        preferred_batch_sizes=list(batching.preferred_batch_sizes),
        max_queue_delay_microseconds=batching.max_queue_delay_microseconds,
        instance_count=serving.instance_group.count,
    )


def merge_tuned(serving: Serving, tuned: TunedSettings | None) -> Serving:
    """``serving`` with the tuned values of the settings its ``tuning.search`` lists.

    Settings the spec keeps out of the search win; so does everything that is not a searched
    setting (cache, image, autoscaling...). Dynamic batching is turned on when the tuned batch
    size is above one and the spec did not keep it fixed. Validated like a spec, so a merge
    never yields a config the API would refuse.
    """
    if tuned is None or serving.tuning is None:
        return serving
    searched = set(serving.tuning.search)
    wire = serving.model_dump(by_alias=True, mode="json", exclude_none=True)
    batching = wire.setdefault("dynamicBatching", {})
    if "maxBatchSize" in searched:
        wire["maxBatchSize"] = tuned.max_batch_size
        batching["enabled"] = tuned.max_batch_size > 1 or batching.get("enabled", True)
    if "maxQueueDelayMicroseconds" in searched:
        batching["maxQueueDelayMicroseconds"] = tuned.max_queue_delay_microseconds
    if "preferredBatchSizes" in searched:
        batching["preferredBatchSizes"] = list(tuned.preferred_batch_sizes)
    if "instanceCount" in searched:
        wire.setdefault("instanceGroup", {})["count"] = tuned.instance_count
    # A batch size searched below a preferred size the spec pinned would be refused: drop those.
    batching["preferredBatchSizes"] = [
        b for b in batching.get("preferredBatchSizes", []) if b <= wire["maxBatchSize"]
    ]
    return type(serving).model_validate(wire)

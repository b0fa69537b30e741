"""``storage.retention``: how many superseded artifacts of a model stay in storage."""

from __future__ import annotations

from pydantic import Field

from optiserve.api.base import ApiModel


class RetentionSpec(ApiModel):
    """Which artifact folders the optimization Job removes from the model's storage folder.

    The served artifact and the last good one (``status.artifact``,
    ``status.lastGoodArtifact``) are always kept, and so is the one being built; of the
    other (superseded) artifacts the ``keepSuperseded`` most recent stay. Work folders of
    killed Jobs are removed once they are older than the Job's ``activeDeadlineSeconds``.
    """

    keep_superseded: int = Field(
        2,
        ge=0,
        le=1000,
        description="Superseded artifacts kept besides the served and last good ones "
        "(most recent first); older ones are removed by the next optimization Job.",
    )

"""What the search leaves in the artifact: the tuned config, the trials table, the plot.

:func:`tune_packaged` is the pipeline's one call. It never fails the optimization: with no
``serving.tuning`` it changes nothing, and any failure of the search (no ``tritonserver``, a
model that fails under load, a server that dies) leaves the spec's settings packaged and an
``untuned`` summary that says why.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optiserve.api.serving import ServingSpec
from optiserve.api.tuning import TuningSummary
from optiserve.model_io import ModelSignature
from optiserve.serve.repository import CONFIG_FILE
from optiserve_optimizer.tuning.runner import search
from optiserve_optimizer.tuning.space import Goal, Trial, choose

PLOT_FILE = "tuning.png"
MAX_SAMPLES = 64


@dataclass
class TuningResult:
    serving: ServingSpec  # what to render the packaged config.pbtxt from
    summary: TuningSummary | None = None
    report: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # beside report.json

    def apply(self, report: dict[str, Any]) -> None:
        """Adds the tuning to ``report`` (its ``tuning`` section and ``artifact.tuning``)."""
        if self.summary is None or self.report is None:
            return
        report["tuning"] = self.report
        report["artifact"]["tuning"] = self.summary.to_wire()


def samples_of(feed: Mapping[str, Any], limit: int = MAX_SAMPLES) -> list[dict[str, Any]]:
    """One-item requests (batch axis kept) from the pipeline's serving feed."""
    count = min((len(v) for v in feed.values()), default=0)
    return [
        {name: np.ascontiguousarray(values[i : i + 1]) for name, values in feed.items()}
        for i in range(min(count, limit))
    ]


def tune_packaged(
    name: str,
    serving: ServingSpec,
    served: Path,
    signature: ModelSignature,
    platform: str,
    feed: Mapping[str, Any],
    config_text: str,
    log: Callable[[str], None],
) -> TuningResult:
    """Searches ``serving.tuning`` for the chosen artifact ``served``; see the module doc."""
    tuning = serving.tuning
    if tuning is None:
        return TuningResult(serving)
    untuned = _untuned_reason(signature, platform, feed)
    if untuned is None:
        try:
            with tempfile.TemporaryDirectory(prefix="optiserve-tuning-") as tmp:
                model_dir = Path(tmp) / name
                (model_dir / "1").mkdir(parents=True)
                target = "model.plan" if served.suffix == ".plan" else "model.onnx"
                (model_dir / "1" / target).symlink_to(served.resolve())
                (model_dir / CONFIG_FILE).write_text(config_text)
                found = search(Path(tmp), name, signature, serving, platform, samples_of(feed), log)
        except Exception as exc:  # a bug or an unforeseen tool failure: still package
            untuned = f"the search failed: {type(exc).__name__}: {exc}"[:600]
        else:
            section = report_section(found.summary, found.trials, Goal.of(tuning))
            files = {}
            if found.trials:
                try:  # the plot is a picture of the table: without it the search still counts
                    files[PLOT_FILE] = plot_png(found.trials, Goal.of(tuning))
                except Exception as exc:  # matplotlib missing or failing
                    log(f"tuning: no {PLOT_FILE}: {type(exc).__name__}: {exc}")
                    section["plot"] = None
            return TuningResult(found.serving or serving, found.summary, section, files)
    log(f"tuning: serving with the spec's settings: {untuned}")
    summary = TuningSummary(
        outcome="untuned",
        latency_budget_ms=tuning.latency_budget_ms,
        message=f"serving with the spec's settings: {untuned}"[:1024],
    )
    return TuningResult(serving, summary, report_section(summary, [], Goal.of(tuning)))


def _untuned_reason(
    signature: ModelSignature, platform: str, feed: Mapping[str, Any]
) -> str | None:
    if platform == "tensorrt_plan":
        return "a TensorRT plan needs the GPU Triton image; the Job's tritonserver is CPU only"
    if not signature.batched:
        return "the model takes no batch dimension: nothing to batch"
    if not feed:
        return "no input samples to send"
    return None


def trial_rows(trials: Sequence[Trial], goal: Goal) -> list[dict[str, Any]]:
    """The report's table: one row per trial, in the order they ran."""
    winner, _ = choose(trials, goal)
    rows = []
    for number, trial in enumerate(trials, 1):
        c = trial.config
        rows.append(
            {
                "trial": number,
                "maxBatchSize": c.max_batch_size,
                "preferredBatchSizes": list(c.preferred),
                "maxQueueDelayUs": c.delay_us,
                "instances": c.instances,
                "throughputRps": round(trial.throughput_rps, 1),
                "p50Ms": round(trial.p50_ms, 2),
                "p99Ms": round(trial.p99_ms, 2),
                "withinBudget": trial.meets(goal),
                "chosen": trial is winner,
                **trial.details,
                "note": "spec settings" if number == 1 else (trial.failure or ""),
            }
        )
    return rows


def report_section(summary: TuningSummary, trials: Sequence[Trial], goal: Goal) -> dict[str, Any]:
    return {
        "summary": summary.to_wire(),
        "method": "hill climbing from the spec's settings over max batch size, preferred batch "
        "sizes, max queue delay and instance count, one step at a time; stops at a local "
        "optimum, maxTrials or maxSeconds. Closed-loop async gRPC clients, warm-up excluded; "
        "p99 is the worst over the concurrency levels, throughput the highest level's.",
        "plot": PLOT_FILE if trials else None,
        "trials": trial_rows(trials, goal),
    }


def plot_png(trials: Sequence[Trial], goal: Goal) -> bytes:
    """Throughput against p99 per trial, the budget as a line, the winner circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [(n, t) for n, t in enumerate(trials, 1) if t.failure is None and t.throughput_rps > 0]
    winner, _ = choose(trials, goal)
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        for number, trial in ran:
            color = "tab:green" if trial.meets(goal) else "tab:red"
            axes.scatter(trial.p99_ms, trial.throughput_rps, color=color, zorder=3)
            axes.annotate(
                str(number),
                (trial.p99_ms, trial.throughput_rps),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
            if trial is winner:
                axes.scatter(
                    trial.p99_ms,
                    trial.throughput_rps,
                    s=220,
                    facecolors="none",
                    edgecolors="black",
                    zorder=4,
                )
        axes.axvline(goal.latency_budget_ms, color="grey", linestyle="--", label="p99 budget")
        axes.set_xlabel("p99 latency (ms, client side)")
        axes.set_ylabel("throughput (requests/s)")
        axes.set_title("Triton tuning trials (1 = spec settings; circled = packaged)")
        axes.legend(loc="lower right")
        axes.grid(alpha=0.3)
        buffer = io.BytesIO()
        figure.tight_layout()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)

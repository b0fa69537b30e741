"""The end of a run: choose the winner, write the report and the Triton model repository.

``pipeline.py`` builds, gates and times the candidates; what it found is handed here as a
``Finished`` run, so the report's shape lives in one place, apart from the running.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optiserve.api import Artifact
from optiserve.digest import optiserve_version
from optiserve.uri import local_path
from optiserve_optimizer import checks, package
from optiserve_optimizer.artifact import ModelArtifact, file_sha256, path_sha256
from optiserve_optimizer.footprint import measure_serving_cost
from optiserve_optimizer.measure import MARGIN, Measurement
from optiserve_optimizer.memory import peak_rss
from optiserve_optimizer.onnx_utils import threads
from optiserve_optimizer.outcome import Outcome, candidate_row, decide, named_metrics
from optiserve_optimizer.plan import Plan, describe_plan
from optiserve_optimizer.progress import Progress, candidates_table
from optiserve_optimizer.runners import BASELINES, ORT_BASELINE
from optiserve_optimizer.text_models import write_text_models
from optiserve_optimizer.tuning import tune_packaged

if TYPE_CHECKING:
    from optiserve_optimizer.pipeline import RunRequest

FALLBACK = "unoptimized"


@dataclass(frozen=True)
class RunResult:
    folder: Path
    report: dict[str, Any]
    reused: bool


@dataclass(frozen=True)
class Finished:
    """Everything a run measured, ready to be decided on and packaged."""

    request: RunRequest
    digest: str
    plan: Plan
    checker: checks.Checker | None
    serving_feed: dict[str, Any]  # a batch of eval inputs: the served model's cost is measured
    original: ModelArtifact
    sig: Any
    measurement: Measurement
    baseline_name: str
    outcomes: list[Outcome]
    shapes: dict[str, Any]


@dataclass(frozen=True)
class _Choice:
    chosen: Outcome | None
    fallback_reason: str | None
    rows: list[dict[str, Any]]
    served: Path
    folder: Path
    renderer: str


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"optiserve": optiserve_version()}
    for dist in ("onnx", "onnxruntime", "torch", "numpy", "tensorrt"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def finish(run: Finished, out_dir: Path, progress: Progress) -> RunResult:
    """Chooses the winner (or keeps the unoptimized model), writes the repository and report."""
    chosen, fallback_reason, reasons = decide(run.outcomes)
    if chosen is None:
        progress.line(f"keeping the unoptimized ONNX model ({fallback_reason})")
    served = chosen.artifact.served_file if chosen and chosen.artifact else run.original.onnx
    rows = [
        candidate_row(o, o is chosen, reasons, run.measurement, run.baseline_name).to_wire()
        for o in run.outcomes
    ]
    progress.line(
        f"candidates (speedup against {run.baseline_name}):\n"
        + candidates_table(
            [
                {
                    **r,
                    "latency_ms": r.get("latencyMs"),
                    "accuracy_drop": r.get("accuracyDrop"),
                    "size_bytes": r.get("sizeBytes"),
                }
                for r in rows
            ]
        )
    )
    platform = "tensorrt_plan" if served.suffix == ".plan" else "onnxruntime_onnx"
    config_text, renderer = package.model_config(
        run.request.name, run.sig, run.request.serving, platform
    )
    tuned = tune_packaged(  # serving.tuning: searched on a local tritonserver (tuning/)
        run.request.name,
        run.request.serving,
        served,
        run.sig,
        platform,
        run.serving_feed,
        config_text,
        progress.line,
    )
    was_tuned = tuned.serving is not run.request.serving
    if was_tuned:
        config_text, renderer = package.model_config(
            run.request.name, run.sig, tuned.serving, platform, tuned=True
        )
    choice = _Choice(chosen, fallback_reason, rows, served, out_dir / run.digest, renderer)
    report = _report(run, choice, progress)
    tuned.apply(report)
    # The facts the pods' init container serves from; a tuned maximum batch size is one of them
    # (the other tuned settings reach the pods through status.serving.tuning at rollout).
    facts = package.artifact_facts(
        run.request.name, run.sig, tuned.serving, platform, tuned=was_tuned
    )
    final = package.write_repository(
        out_dir,
        run.digest,
        run.request.name,
        served,
        config_text,
        report,
        facts_text=facts,
        extra_files=tuned.files,
        add_models=_text_models(run, tuned.serving.max_batch_size),
    )
    progress.line(f"wrote {final}")
    return RunResult(final, report, reused=False)


def _text_models(run: Finished, max_batch_size: int) -> Callable[[Path], object] | None:
    """``serving.tokenizer``: the tokenizer and the text ensemble, written beside the model."""
    source = run.request.source
    if not run.request.serving.tokenizer or source.format != "huggingface":
        return None
    folder = local_path(source.uri)
    return lambda repository: write_text_models(
        repository, run.request.name, folder, run.sig, max_batch_size
    )


def _report(run: Finished, choice: _Choice, progress: Progress) -> dict[str, Any]:
    chosen, served, measurement = choice.chosen, choice.served, run.measurement
    source_file = run.original.torch or run.original.onnx
    metrics = named_metrics(
        measurement,
        run.baseline_name,
        chosen.plan.name if chosen else ORT_BASELINE,
        chosen.gate.drop if chosen and chosen.gate else 0.0,
        source_file.stat().st_size / served.stat().st_size,
    )
    # What was optimized, as found: a file replaced at the same URI shows up as another
    # hash here and in status.artifact.sourceSha256 (docs/operator.md, "Retention").
    source_sha256 = path_sha256(local_path(run.request.source.uri))
    cost = measure_serving_cost(
        served,
        run.serving_feed,
        threads(),
        run.request.optimization.target.device,
        progress.line,
    )
    artifact = Artifact(
        digest=f"sha256:{run.digest}",
        source_sha256=source_sha256,
        uri=package.as_uri(choice.folder / package.REPOSITORY),
        report=package.as_uri(choice.folder / package.REPORT_PAGE).rstrip("/"),
        precision=chosen.artifact.precision if chosen and chosen.artifact else "fp32",
        format="tensorrt_plan" if served.suffix == ".plan" else "onnx",
        candidate=chosen.plan.name if chosen else FALLBACK,
        serving_cost=cost,
    )
    baselines = {
        name: timing.as_dict() for name, timing in measurement.timings.items() if name in BASELINES
    }
    return {
        "apiVersion": "optiserve.io/v1alpha1",
        "kind": "OptimizationReport",
        "name": run.request.name,
        "recipeDigest": run.digest,
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            **run.request.source.to_wire(),
            "actualSha256": source_sha256,
        },
        "optimization": run.request.optimization.to_wire(),
        "plan": describe_plan(run.plan).splitlines(),
        "notes": list(run.plan.notes),
        "baseline": {
            "name": run.baseline_name,
            "runtime": run.baseline_name,
            "sizeBytes": source_file.stat().st_size,
            **baselines[run.baseline_name],
            "beside": {k: v for k, v in baselines.items() if k != run.baseline_name},
        },
        "measurement": {
            **measurement.conditions.as_dict(),
            "method": "interleaved rounds; speedup = median of per-round throughput ratios",
            "decision": f"faster only beyond the noise (lower quartile of the per-round "
            f"ratio > 1 + {MARGIN:g}), else more accurate, else fewer steps",
        },
        "checks": run.checker.report() if run.checker else [],
        "candidates": choice.rows,
        "candidateDetails": {
            o.plan.name: _details(o, measurement, baselines) for o in run.outcomes
        },
        "chosen": artifact.candidate,
        "fallbackReason": choice.fallback_reason,
        "artifact": artifact.to_wire(),
        "metrics": metrics.to_wire(),
        "shapes": run.shapes,
        "configRenderer": choice.renderer,
        "tools": tool_versions(),
        "memory": peak_rss(),  # the optimizer process, up to packaging
        "digests": {
            "recipe": run.digest,
            "source": file_sha256(source_file),
            "model": file_sha256(served),
        },
    }


def _details(o: Outcome, measurement: Measurement, baselines: dict[str, Any]) -> dict[str, Any]:
    return {
        "steps": [s.describe() for s in o.plan.steps],
        "passes": o.passes,
        "failure": o.failure,
        "failedStep": o.failed_step,
        "accuracy": (
            {
                "metric": o.gate.metric,
                "drop": o.gate.drop,
                "maxDrop": o.gate.max_drop,
                **o.gate.details,
            }
            if o.gate is not None
            else None
        ),
        "benchmark": o.timing.as_dict() if o.timing else None,
        "speedups": (
            {name: measurement.speedup(o.plan.name, name).as_dict() for name in baselines}
            if o.timing
            else None
        ),
    }

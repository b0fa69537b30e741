"""Runs the planned candidates, gates them, times them with the baselines, picks, packages.

Candidates share step prefixes (``pruned-structured`` and ``pruned-structured+int8-static``
prune and recover once). Candidates fail alone: an ``OptimizerError`` from a pass marks that
candidate, and every candidate sharing the failed step prefix, failed with the reason, and the
run goes on with the others (the report and the status ladder show why). Only a failure to
load or export the source, or bad data (``DataError``), stops the whole run.

Every figure comes from one interleaved measurement (``measure.py``): the source model in its
own framework (the named baseline), onnxruntime FP32 of the exported model beside it, and every
candidate that ran, timed round-robin; the winner is chosen by ``measure.choose``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optiserve.api import Artifact, OptimizationSpec, ServingSpec, SourceSpec
from optiserve.digest import optiserve_version, spec_recipe_digest
from optiserve.uri import local_path
from optiserve_optimizer import checks, data, inputs, package
from optiserve_optimizer.artifact import ModelArtifact, PassContext, file_sha256, path_sha256
from optiserve_optimizer.errors import DataError, OptimizerError
from optiserve_optimizer.evaluate import TOKEN_MASK, compare, gate
from optiserve_optimizer.footprint import feed_of, measure_serving_cost
from optiserve_optimizer.measure import MARGIN, Measurement, measure
from optiserve_optimizer.memory import peak_rss
from optiserve_optimizer.onnx_utils import load_model, signature, threads
from optiserve_optimizer.outcome import (
    CandidateFailed,
    Outcome,
    candidate_row,
    decide,
    named_metrics,
)
from optiserve_optimizer.plan import CandidatePlan, Plan, build_plan, describe_plan
from optiserve_optimizer.progress import Progress, candidates_table
from optiserve_optimizer.registry import pass_for
from optiserve_optimizer.runners import (
    BASELINES,
    ORT_BASELINE,
    baseline_runners,
    run_all,
    runner_for,
)

FALLBACK = "unoptimized"
EVAL_BATCH = 64


@dataclass(frozen=True)
class RunRequest:
    name: str
    source: SourceSpec
    optimization: OptimizationSpec
    serving: ServingSpec = field(default_factory=ServingSpec)


@dataclass(frozen=True)
class RunResult:
    folder: Path
    report: dict[str, Any]
    reused: bool


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"optiserve": optiserve_version()}
    for dist in ("onnx", "onnxruntime", "torch", "numpy", "tensorrt"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


class Pipeline:
    def __init__(self, request: RunRequest, out_dir: Path, progress: Progress) -> None:
        self.request = request
        self.out_dir = out_dir
        self.progress = progress
        self.plan: Plan = build_plan(request.source, request.optimization)
        self.digest = spec_recipe_digest(
            request.name, request.source, request.optimization, request.serving
        )
        self.cache: dict[tuple[str, ...], tuple[ModelArtifact, dict[str, Any]]] = {}
        self.checker: checks.Checker | None = None
        self.failed: dict[tuple[str, ...], CandidateFailed] = {}  # failed step prefixes
        self.serving_feed: dict[str, Any] = {}

    def run(self) -> RunResult:
        existing = package.existing_report(self.out_dir, self.digest)
        if existing is not None:
            self.progress.line(f"reusing {self.out_dir / self.digest} (recipe {self.digest[:12]})")
            return RunResult(self.out_dir / self.digest, existing, reused=True)
        self.progress.line(f"recipe {self.digest[:12]}; plan:\n{describe_plan(self.plan)}")
        spec = self.request.optimization
        eval_path = local_path(spec.accuracy.dataset)
        data.describe(eval_path, "accuracy")  # fail before any work when it is missing
        if any(c.engine == "tensorrt_plan" for c in self.plan.candidates):
            from optiserve_optimizer.passes.tensorrt_build import preflight

            preflight(self.progress.line)  # likewise TensorRT and a GPU
        work = self.out_dir / f".work-{self.digest[:12]}-{os.getpid()}"
        ctx = PassContext(self.request.source, spec, work, self.progress)
        try:
            return self._run(ctx, eval_path)
        finally:
            if not os.environ.get("OPTISERVE_KEEP_WORK"):
                shutil.rmtree(work, ignore_errors=True)

    def _steps(
        self, candidate: CandidatePlan, ctx: PassContext
    ) -> tuple[ModelArtifact, dict[str, Any]]:
        """The candidate's artifact; raises ``CandidateFailed`` when one of its steps (or a
        step it shares with an earlier candidate) could not be applied."""
        artifact: ModelArtifact | None = None
        metrics: dict[str, Any] = {}
        key: tuple[str, ...] = ()
        for step in candidate.steps:
            key = (*key, step.describe())
            if key in self.failed:
                raise self.failed[key]
            if key in self.cache:
                artifact, metrics = self.cache[key]
                continue
            ctx.step_label = step.describe()
            try:
                with self.progress.step(candidate.name, step.name) as shown:
                    result = pass_for(step.name).run(artifact, step.params, ctx)
                    shown.update(
                        {
                            k: v
                            for k, v in result.metrics.items()
                            if isinstance(v, int | float | str)
                        }
                    )
            except DataError:
                raise  # the user's data is wrong: every candidate would fail the same way
            except OptimizerError as exc:
                self.failed[key] = CandidateFailed(step.describe(), exc)
                raise self.failed[key] from exc
            artifact, metrics = result.artifact, {**metrics, step.name: dict(result.metrics)}
            self.cache[key] = (artifact, metrics)
        assert artifact is not None
        return artifact, metrics

    def _build(
        self,
        candidate: CandidatePlan,
        ctx: PassContext,
        arrays: dict[str, Any],
        labels: Any,
        reference: list[Any],
        input_names: list[str],
    ) -> Outcome:
        """Builds and gates one candidate; a failure stays with this candidate."""
        spec = self.request.optimization
        try:
            artifact, passes = self._steps(candidate, ctx)
        except CandidateFailed as failed:
            return Outcome(
                candidate,
                failure=f"failed in {failed.step}: {failed.cause}",
                failed_step=failed.step,
            )
        try:
            with self.progress.step(candidate.name, "gate") as shown:
                runner = runner_for(artifact.served_file, spec.target.device, input_names)
                outputs = run_all(runner, arrays, EVAL_BATCH)
                details = compare(reference, outputs, labels, arrays.get(TOKEN_MASK))
                verdict = gate(spec.accuracy.metric, spec.accuracy.max_drop, details)
                if self.checker is not None:  # references and the padded batch
                    verdict = self.checker.gate(candidate.name, runner, outputs, verdict)
                shown.update(drop=verdict.drop, passed=verdict.passed)
        except Exception as exc:  # onnxruntime/TensorRT refusing to run it: this candidate only
            return Outcome(
                candidate,
                artifact,
                passes,
                failure=f"could not run the candidate: {type(exc).__name__}: {exc}"[:1000],
                failed_step="gate",
            )
        return Outcome(candidate, artifact, passes, verdict, runner=runner)

    def _run(self, ctx: PassContext, eval_path: Path) -> RunResult:
        spec = self.request.optimization
        first = self.plan.candidates[0]
        try:
            original, _ = self._steps(CandidatePlan("original", "fp32", first.steps[:1]), ctx)
        except CandidateFailed as failed:  # no source, no run
            raise failed.cause from failed
        ctx.original = original
        sig = signature(load_model(original.onnx, "load_export"))
        input_names = [t.name for t in sig.inputs]
        batches = spec.benchmark.batch_sizes
        data.check_against(eval_path, sig.inputs, "accuracy", min_samples=max(batches))
        arrays = data.load(eval_path, [*input_names, data.LABELS])
        labels = arrays.pop(data.LABELS, None)
        device = spec.target.device
        source_runner = runner_for(original.onnx, device, input_names)
        reference = run_all(source_runner, arrays, EVAL_BATCH)
        self.checker = checks.Checker.for_source(
            spec.accuracy.metric,
            spec.accuracy.max_drop,
            sig,
            eval_path,
            arrays,
            reference,
            source_runner,
            ctx.shared.get(inputs.BINDING),
            max(batches),
        )
        outcomes = [
            self._build(candidate, ctx, arrays, labels, reference, input_names)
            for candidate in self.plan.candidates
        ]
        baseline_name, runners = baseline_runners(
            original.torch, original.onnx, device, input_names
        )
        runners |= {o.plan.name: o.runner for o in outcomes if o.runner is not None}
        with self.progress.step("all", "measure") as shown:
            measurement = measure(
                runners,
                arrays,
                batches,
                warmup=spec.benchmark.warmup,
                iterations=spec.benchmark.iterations,
                rounds=spec.benchmark.rounds,
                threads=threads(),
                device=device,
            )
            shown.update(runners=len(runners), rounds=spec.benchmark.rounds)
        self.progress.line(f"measured on {measurement.conditions.line()}")
        self.serving_feed = feed_of(arrays, max(batches))  # footprint: the served model's cost
        for o in outcomes:
            o.timing = measurement.timings.get(o.plan.name)
            o.runner = None  # sessions are not needed any more
        return self._package(ctx, original, sig, measurement, baseline_name, outcomes)

    def _package(
        self,
        ctx: PassContext,
        original: ModelArtifact,
        sig: Any,
        measurement: Measurement,
        baseline_name: str,
        outcomes: list[Outcome],
    ) -> RunResult:
        chosen, fallback_reason, reasons = decide(outcomes)
        if chosen is None:
            self.progress.line(f"keeping the unoptimized ONNX model ({fallback_reason})")
        served = chosen.artifact.served_file if chosen and chosen.artifact else original.onnx
        rows = [
            candidate_row(o, o is chosen, reasons, measurement, baseline_name).to_wire()
            for o in outcomes
        ]
        self.progress.line(
            f"candidates (speedup against {baseline_name}):\n"
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
        folder = self.out_dir / self.digest
        platform = "tensorrt_plan" if served.suffix == ".plan" else "onnxruntime_onnx"
        config_text, renderer = package.model_config(
            self.request.name, sig, self.request.serving, platform
        )
        report = self._report(
            ctx,
            original,
            measurement,
            baseline_name,
            outcomes,
            rows,
            chosen,
            fallback_reason,
            served,
            folder,
            renderer,
        )
        final = package.write_repository(
            self.out_dir, self.digest, self.request.name, served, config_text, report
        )
        self.progress.line(f"wrote {final}")
        return RunResult(final, report, reused=False)

    def _report(
        self,
        ctx: PassContext,
        original: ModelArtifact,
        measurement: Measurement,
        baseline_name: str,
        outcomes: list[Outcome],
        rows: list[dict[str, Any]],
        chosen: Outcome | None,
        fallback_reason: str | None,
        served: Path,
        folder: Path,
        renderer: str,
    ) -> dict[str, Any]:
        source_file = original.torch or original.onnx
        metrics = named_metrics(
            measurement,
            baseline_name,
            chosen.plan.name if chosen else ORT_BASELINE,
            chosen.gate.drop if chosen and chosen.gate else 0.0,
            source_file.stat().st_size / served.stat().st_size,
        )
        # What was optimized, as found: a file replaced at the same URI shows up as another
        # hash here and in status.artifact.sourceSha256 (docs/operator.md, "Retention").
        source_sha256 = path_sha256(local_path(self.request.source.uri))
        cost = measure_serving_cost(
            served,
            self.serving_feed,
            threads(),
            self.request.optimization.target.device,
            self.progress.line,
        )
        artifact = Artifact(
            digest=f"sha256:{self.digest}",
            source_sha256=source_sha256,
            uri=package.as_uri(folder / package.REPOSITORY),
            report=package.as_uri(folder / package.REPORT_PAGE).rstrip("/"),
            precision=chosen.artifact.precision if chosen and chosen.artifact else "fp32",
            format="tensorrt_plan" if served.suffix == ".plan" else "onnx",
            candidate=chosen.plan.name if chosen else FALLBACK,
            serving_cost=cost,
        )
        baselines = {
            name: timing.as_dict()
            for name, timing in measurement.timings.items()
            if name in BASELINES
        }
        return {
            "apiVersion": "optiserve.io/v1alpha1",
            "kind": "OptimizationReport",
            "name": self.request.name,
            "recipeDigest": self.digest,
            "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                **self.request.source.to_wire(),
                "actualSha256": source_sha256,
            },
            "optimization": self.request.optimization.to_wire(),
            "plan": describe_plan(self.plan).splitlines(),
            "notes": list(self.plan.notes),
            "baseline": {
                "name": baseline_name,
                "runtime": baseline_name,
                "sizeBytes": source_file.stat().st_size,
                **baselines[baseline_name],
                "beside": {k: v for k, v in baselines.items() if k != baseline_name},
            },
            "measurement": {
                **measurement.conditions.as_dict(),
                "method": "interleaved rounds; speedup = median of per-round throughput ratios",
                "decision": f"faster only beyond the noise (lower quartile of the per-round "
                f"ratio > 1 + {MARGIN:g}), else more accurate, else fewer steps",
            },
            "checks": self.checker.report() if self.checker else [],
            "candidates": rows,
            "candidateDetails": {
                o.plan.name: {
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
                        {
                            name: measurement.speedup(o.plan.name, name).as_dict()
                            for name in baselines
                        }
                        if o.timing
                        else None
                    ),
                }
                for o in outcomes
            },
            "chosen": artifact.candidate,
            "fallbackReason": fallback_reason,
            "artifact": artifact.to_wire(),
            "metrics": metrics.to_wire(),
            "shapes": ctx.shared.get("shapeFacts", {}),
            "configRenderer": renderer,
            "tools": tool_versions(),
            "memory": peak_rss(),  # the optimizer process, up to packaging
            "digests": {
                "recipe": self.digest,
                "source": file_sha256(source_file),
                "model": file_sha256(served),
            },
        }


def run_request(request: RunRequest, out_dir: Path, progress: Progress | None = None) -> RunResult:
    return Pipeline(request, out_dir, progress or Progress()).run()

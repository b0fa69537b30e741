"""Runs the planned candidates, gates and times them, picks the fastest that passes, packages.

Candidates share step prefixes (``pruned-structured`` and ``pruned-structured+int8-static``
prune and recover once). Any pass failure stops the run with its typed error: a half-built
candidate is never silently dropped, and nothing is packaged.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optiserve.api import Artifact, Candidate, Metrics, OptimizationSpec, ServingSpec, SourceSpec
from optiserve.digest import optiserve_version, spec_recipe_digest
from optiserve.uri import local_path
from optiserve_optimizer import data, package
from optiserve_optimizer.artifact import ModelArtifact, PassContext, file_sha256
from optiserve_optimizer.bench import BenchResult, benchmark
from optiserve_optimizer.evaluate import GateResult, compare, gate
from optiserve_optimizer.onnx_utils import load_model, signature
from optiserve_optimizer.plan import CandidatePlan, Plan, build_plan, describe_plan
from optiserve_optimizer.progress import Progress, candidates_table
from optiserve_optimizer.registry import pass_for
from optiserve_optimizer.runners import run_all, runner_for

FALLBACK = "unoptimized"
EVAL_BATCH = 64


@dataclass(frozen=True)
class RunRequest:
    name: str
    source: SourceSpec
    optimization: OptimizationSpec
    serving: ServingSpec = field(default_factory=ServingSpec)


@dataclass
class Outcome:
    plan: CandidatePlan
    artifact: ModelArtifact
    passes: dict[str, Any]
    gate: GateResult
    bench: BenchResult

    @property
    def size(self) -> int:
        return self.artifact.served_file.stat().st_size


@dataclass(frozen=True)
class RunResult:
    folder: Path
    report: dict[str, Any]
    reused: bool


def decide(outcomes: list[Outcome]) -> tuple[Outcome | None, str | None]:
    """The fastest passing candidate (throughput at the largest batch, then p50 latency), or
    None and why, in which case the unoptimized ONNX model is packaged."""
    passing = [o for o in outcomes if o.gate.passed]
    chosen = min(passing, key=lambda o: (-o.bench.throughput, o.bench.p50_ms), default=None)
    if chosen is not None:
        return chosen, None
    return None, "no candidate passed the accuracy gate: " + "; ".join(
        f"{o.plan.name}: {o.gate.reason()}" for o in outcomes
    )


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
        artifact: ModelArtifact | None = None
        metrics: dict[str, Any] = {}
        key: tuple[str, ...] = ()
        for step in candidate.steps:
            key = (*key, step.describe())
            if key in self.cache:
                artifact, metrics = self.cache[key]
                continue
            ctx.step_label = step.describe()
            with self.progress.step(candidate.name, step.name) as shown:
                result = pass_for(step.name).run(artifact, step.params, ctx)
                shown.update(
                    {k: v for k, v in result.metrics.items() if isinstance(v, int | float | str)}
                )
            artifact, metrics = result.artifact, {**metrics, step.name: dict(result.metrics)}
            self.cache[key] = (artifact, metrics)
        assert artifact is not None
        return artifact, metrics

    def _run(self, ctx: PassContext, eval_path: Path) -> RunResult:
        spec = self.request.optimization
        first = self.plan.candidates[0]
        original, _ = self._steps(CandidatePlan("original", "fp32", first.steps[:1]), ctx)
        ctx.original = original
        sig = signature(load_model(original.onnx, "load_export"))
        input_names = [t.name for t in sig.inputs]
        batches = spec.benchmark.batch_sizes
        data.check_against(eval_path, sig.inputs, "accuracy", min_samples=max(batches))
        arrays = data.load(eval_path, [*input_names, data.LABELS])
        labels = arrays.pop(data.LABELS, None)
        device = spec.target.device
        reference = run_all(runner_for(original.onnx, device, input_names), arrays, EVAL_BATCH)
        bench_args = (arrays, batches, spec.benchmark.warmup, spec.benchmark.iterations)
        baseline_file = original.torch or original.onnx
        with self.progress.step("baseline", "benchmark") as shown:
            baseline = benchmark(runner_for(baseline_file, device, input_names), *bench_args)
            shown.update(p50_ms=baseline.p50_ms, throughput=baseline.throughput)
        outcomes: list[Outcome] = []
        for candidate in self.plan.candidates:
            artifact, passes = self._steps(candidate, ctx)
            runner = runner_for(artifact.served_file, device, input_names)
            with self.progress.step(candidate.name, "gate+bench") as shown:
                details = compare(reference, run_all(runner, arrays, EVAL_BATCH), labels)
                verdict = gate(spec.accuracy.metric, spec.accuracy.max_drop, details)
                timing = benchmark(runner, *bench_args)
                shown.update(
                    drop=verdict.drop,
                    passed=verdict.passed,
                    p50_ms=timing.p50_ms,
                    throughput=timing.throughput,
                )
            outcomes.append(Outcome(candidate, artifact, passes, verdict, timing))
        return self._package(ctx, original, sig, baseline, outcomes)

    def _package(
        self,
        ctx: PassContext,
        original: ModelArtifact,
        sig: Any,
        baseline: BenchResult,
        outcomes: list[Outcome],
    ) -> RunResult:
        chosen, fallback_reason = decide(outcomes)
        if chosen is None:
            self.progress.line(f"keeping the unoptimized ONNX model ({fallback_reason})")
        served = chosen.artifact.served_file if chosen else original.onnx
        rows = [self._candidate(o, o is chosen).to_wire() for o in outcomes]
        self.progress.line(
            "candidates:\n"
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
            baseline,
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

    @staticmethod
    def _candidate(o: Outcome, chosen: bool) -> Candidate:
        return Candidate(
            name=o.plan.name,
            precision=o.artifact.precision,
            latency_ms=round(o.bench.p50_ms, 4),
            throughput=round(o.bench.throughput, 2),
            accuracy_drop=round(o.gate.drop, 6) if o.gate.drop != float("inf") else None,
            size_bytes=o.size,
            passed=o.gate.passed,
            chosen=chosen,
            reason=o.gate.reason() or ("fastest passing" if chosen else ""),
        )

    def _report(
        self,
        ctx: PassContext,
        original: ModelArtifact,
        baseline: BenchResult,
        outcomes: list[Outcome],
        rows: list[dict[str, Any]],
        chosen: Outcome | None,
        fallback_reason: str | None,
        served: Path,
        folder: Path,
        renderer: str,
    ) -> dict[str, Any]:
        source_file = original.torch or original.onnx
        best = chosen.bench if chosen else None
        metrics = Metrics(
            baseline_latency_ms=round(baseline.p50_ms, 4),
            optimized_latency_ms=round(best.p50_ms, 4) if best else None,
            baseline_throughput=round(baseline.throughput, 2),
            optimized_throughput=round(best.throughput, 2) if best else None,
            speedup=f"{best.throughput / baseline.throughput:.2f}x" if best else None,
            accuracy_drop=round(chosen.gate.drop, 6) if chosen else 0.0,
            size_ratio=round(source_file.stat().st_size / served.stat().st_size, 3),
        )
        artifact = Artifact(
            digest=f"sha256:{self.digest}",
            uri=package.as_uri(folder / package.REPOSITORY),
            precision=chosen.artifact.precision if chosen else "fp32",
            format="tensorrt_plan" if served.suffix == ".plan" else "onnx",
            candidate=chosen.plan.name if chosen else FALLBACK,
        )
        return {
            "apiVersion": "optiserve.io/v1alpha1",
            "kind": "OptimizationReport",
            "name": self.request.name,
            "recipeDigest": self.digest,
            "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                **self.request.source.to_wire(),
                "actualSha256": file_sha256(local_path(self.request.source.uri)),
            },
            "optimization": self.request.optimization.to_wire(),
            "plan": describe_plan(self.plan).splitlines(),
            "notes": list(self.plan.notes),
            "baseline": {
                "runtime": "pytorch-torchscript" if original.torch else "onnxruntime-fp32",
                "sizeBytes": source_file.stat().st_size,
                **baseline.as_dict(),
            },
            "candidates": rows,
            "candidateDetails": {
                o.plan.name: {
                    "steps": [s.describe() for s in o.plan.steps],
                    "passes": o.passes,
                    "accuracy": {
                        "metric": o.gate.metric,
                        "drop": o.gate.drop,
                        "maxDrop": o.gate.max_drop,
                        **o.gate.details,
                    },
                    "benchmark": o.bench.as_dict(),
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
            "digests": {
                "recipe": self.digest,
                "source": file_sha256(source_file),
                "model": file_sha256(served),
            },
        }


def run_request(request: RunRequest, out_dir: Path, progress: Progress | None = None) -> RunResult:
    return Pipeline(request, out_dir, progress or Progress()).run()

"""Runs the planned candidates, gates them, times them with the baselines, picks, packages.

Candidates share step prefixes (``pruned-structured`` and ``pruned-structured+int8-static``
prune and recover once). Candidates fail alone: an ``OptimizerError`` from a pass marks that
candidate, and every candidate sharing the failed step prefix, failed with the reason, and the
run goes on with the others (the report and the status ladder show why). Only a failure to
load or export the source, bad data (``DataError``), or a TensorRT candidate with no CUDA device
at all (nothing could be measured on the target GPU) stops the whole run; a GPU that TensorRT
cannot use fails only the TensorRT candidates, before any of their steps run.

Every figure comes from one interleaved measurement (``measure.py``): the source model in its
own framework (the named baseline), onnxruntime FP32 of the exported model beside it, and every
candidate that ran, timed round-robin; the winner is chosen by ``measure.choose`` and
packaged with its report by ``finish.py``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optiserve.api import OptimizationSpec, ServingSpec, SourceSpec
from optiserve.digest import spec_recipe_digest
from optiserve.model_io import ModelSignature
from optiserve.uri import local_path
from optiserve_optimizer import checks, data, gate_data, inputs, package, padding
from optiserve_optimizer.artifact import ModelArtifact, PassContext
from optiserve_optimizer.errors import DataError, OptimizerError
from optiserve_optimizer.evaluate import gate
from optiserve_optimizer.finish import Finished, RunResult, finish
from optiserve_optimizer.footprint import feed_of
from optiserve_optimizer.measure import measure
from optiserve_optimizer.onnx_utils import load_model, signature, threads
from optiserve_optimizer.outcome import CandidateFailed, Outcome, unavailable
from optiserve_optimizer.plan import TENSORRT, CandidatePlan, Plan, build_plan, describe_plan
from optiserve_optimizer.progress import Progress
from optiserve_optimizer.registry import pass_for
from optiserve_optimizer.runners import Runner, baseline_runners, runner_for
from optiserve_optimizer.text_models import tokenizer_files

EVAL_BATCH = 64

# RunResult is defined with the packaging (finish.py); importing it from here keeps working.
__all__ = ["EVAL_BATCH", "Pipeline", "RunRequest", "RunResult", "run_request"]


@dataclass(frozen=True)
class RunRequest:
    name: str
    source: SourceSpec
    optimization: OptimizationSpec
    serving: ServingSpec = field(default_factory=ServingSpec)


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
        self.missing: dict[str, OptimizerError] = {}  # pass name -> why it cannot run here

    def run(self) -> RunResult:
        existing = package.existing_report(self.out_dir, self.digest)
        if existing is not None:
            self.progress.line(f"reusing {self.out_dir / self.digest} (recipe {self.digest[:12]})")
            return RunResult(self.out_dir / self.digest, existing, reused=True)
        self.progress.line(f"recipe {self.digest[:12]}; plan:\n{describe_plan(self.plan)}")
        spec = self.request.optimization
        eval_path = local_path(spec.accuracy.dataset)
        data.describe(eval_path, "accuracy")  # fail before any work when it is missing
        if self.request.serving.tokenizer:  # likewise the tokenizer serving.tokenizer packages
            tokenizer_files(local_path(self.request.source.uri))
        if any(c.engine == "tensorrt_plan" for c in self.plan.candidates):
            from optiserve_optimizer.passes.tensorrt_build import preflight

            unusable = preflight(self.progress.line)  # likewise TensorRT and a GPU
            if unusable is not None:
                self.missing[TENSORRT] = unusable
                self.progress.line(f"TensorRT candidates fail alone: {unusable}")
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
        stream: gate_data.EvalStream,
        spool: gate_data.OutputSpool,
    ) -> Outcome:
        """Builds and gates one candidate; a failure stays with this candidate."""
        spec = self.request.optimization
        skipped = unavailable(candidate, self.missing)
        if skipped is not None:
            return skipped
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
                names = list(stream.input_names)
                runner = runner_for(artifact.served_file, spec.target.device, names)
                tally = self.checker.tally() if self.checker is not None else None
                details = gate_data.candidate_pass(runner, stream, spool, tally)
                verdict = gate(spec.accuracy.metric, spec.accuracy.max_drop, details)
                if self.checker is not None and tally is not None:  # references, padded batch
                    verdict = self.checker.gate(candidate.name, runner, tally, verdict)
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

    def _checker(
        self,
        sig: ModelSignature,
        stream: gate_data.EvalStream,
        spool: gate_data.OutputSpool,
        source_runner: Runner,
        max_batch: int,
        ctx: PassContext,
    ) -> checks.Checker:
        """Runs the source over the eval set once (its outputs spooled for the gate) and
        checks it (references, padded batch); a failing source fails the run."""
        spec = self.request.optimization
        references = checks.reference_names(stream.path, sig.outputs)
        tally = checks.ReferenceTally(references)
        mask = padding.mask_input(sig.inputs)
        masks = gate_data.source_pass(source_runner, stream, spool, tally, mask)
        checks.check_reference_shapes(stream.path, sig.outputs, references, spool.shapes())
        shapes = {n: info.shape for n, info in data.describe(stream.path, "accuracy").items()}
        lengths, right_padded = masks.arrays()
        rows = min(padding.PADDED_ROWS, max_batch)
        padded = padding.choose_padded(sig.inputs, shapes, lengths, right_padded, rows)
        sample = stream.rows(padded.rows) if isinstance(padded, padding.PaddedBatch) else {}
        checker = checks.Checker(
            spec.accuracy.metric,
            spec.accuracy.max_drop,
            sig,
            stream.path,
            references,
            padded,
            sample,
            ctx.shared.get(inputs.BINDING),
        )
        return checker.checked_source(source_runner, tally)

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
        device = spec.target.device
        source_runner = runner_for(original.onnx, device, input_names)
        stream = gate_data.EvalStream.of(eval_path, input_names, EVAL_BATCH)
        spool = gate_data.OutputSpool(ctx.work_dir / "gate-source-outputs")
        self.checker = self._checker(sig, stream, spool, source_runner, max(batches), ctx)
        outcomes = [
            self._build(candidate, ctx, stream, spool) for candidate in self.plan.candidates
        ]
        arrays = stream.head(max(batches))  # what the benchmark times
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
        finished = Finished(
            self.request,
            self.digest,
            self.plan,
            self.checker,
            self.serving_feed,
            original,
            sig,
            measurement,
            baseline_name,
            outcomes,
            ctx.shared.get("shapeFacts", {}),
        )
        return finish(finished, self.out_dir, self.progress)


def run_request(request: RunRequest, out_dir: Path, progress: Progress | None = None) -> RunResult:
    return Pipeline(request, out_dir, progress or Progress()).run()

"""Runs the search on a real ``tritonserver``: one config.pbtxt variant per trial, measured.

The server is started once (model control ``explicit``) on the packaged repository; each
trial writes the variant's config (rendered by the operator's own renderer from the spec merged
with the trial's settings, then turned into the local CPU twin) and loads the model again.
Trials measure the model, not the response cache: repeated trial inputs would only hit it, so
the cache is off while measuring and stays as the spec says in the packaged config.

Bounded: the server start, every load and every window have timeouts, and no trial starts
unless the longest one so far still fits in ``maxSeconds``. A server that dies ends the search
with what was measured before; a failure never reaches the optimization itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from optiserve.api.serving import ServingSpec
from optiserve.api.tuning import TuningSpec, TuningSummary, merge_tuned, settings_of
from optiserve.model_io import ModelSignature
from optiserve.render.triton import render_model_config
from optiserve.serve import LocalTriton, ServeError
from optiserve.serve.install import TritonInstall
from optiserve.serve.loadgen import Sample
from optiserve.serve.repository import CONFIG_FILE, localize_config
from optiserve_optimizer.tuning.load import LoadFailed, Window, measure_window
from optiserve_optimizer.tuning.space import (
    Config,
    Goal,
    Trial,
    build_space,
    fits_in_time,
    next_config,
    summarize,
)

LOAD_TIMEOUT_S = 120.0
STARTUP_SHARE = 0.5  # the server start may take at most this share of maxSeconds


class ServerDied(RuntimeError):
    pass


@dataclass
class SearchResult:
    summary: TuningSummary
    trials: list[Trial] = field(default_factory=list)
    serving: ServingSpec | None = None  # the spec merged with the winner (None: untuned)


def serving_for(serving: ServingSpec, config: Config) -> ServingSpec:
    """The spec's serving settings with one trial's searched values."""
    return merge_tuned(serving, config.settings())


def trial_config_text(
    name: str, signature: ModelSignature, serving: ServingSpec, config: Config, platform: str
) -> str:
    """The local twin's config.pbtxt for one trial (cache off: see the module docstring)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    chosen = cast(Literal["onnxruntime_onnx", "tensorrt_plan", "python"], platform)
    text = render_model_config(name, signature, serving_for(serving, config), chosen)
    parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
    parsed.response_cache.enable = False
    if platform != "python":
        localize_config(parsed)
    return str(text_format.MessageToString(parsed))


def search(
    repository: Path,
    name: str,
    signature: ModelSignature,
    serving: ServingSpec,
    platform: str,
    samples: Sequence[Sample],
    log: Callable[[str], None],
    *,
    install: TritonInstall | None = None,
    on_trial: Callable[[LocalTriton, int], None] | None = None,
) -> SearchResult:
    """Searches ``serving.tuning`` on ``repository`` (a packaged model repository)."""
    tuning = serving.tuning
    if tuning is None:
        raise ValueError("serving.tuning is not set")
    goal = Goal.of(tuning)
    space = build_space(settings_of(serving), tuning, signature.batched)
    began = time.monotonic()
    trials: list[Trial] = []
    stopped, error = "searched to a local optimum", None
    longest = 0.0
    try:
        with LocalTriton(
            repository,
            None,
            startup_timeout_s=max(10.0, tuning.max_seconds * STARTUP_SHARE),
            install=install,
            model_control_mode="explicit",
        ) as triton:
            log(f"tuning: tritonserver ready after {time.monotonic() - began:.1f}s")
            while (config := next_config(space, trials, goal, tuning.max_trials)) is not None:
                elapsed = time.monotonic() - began
                if trials and not fits_in_time(elapsed, longest, tuning.max_seconds):
                    stopped = f"stopped by maxSeconds {tuning.max_seconds}"
                    break
                if on_trial is not None:
                    on_trial(triton, len(trials))
                trial_began = time.monotonic()
                try:
                    trial = _run_trial(
                        triton, name, signature, serving, platform, config, samples, tuning
                    )
                except LoadFailed as exc:  # e.g. the model took the server down under load
                    trial = Trial(config, failure=f"measurement failed: {exc}"[:300])
                longest = max(longest, time.monotonic() - trial_began)
                trials.append(trial)
                log(f"tuning: trial {len(trials)}: {_line(trial)}")
                if not triton.running:
                    note = death_note(triton.log())
                    raise ServerDied(f"tritonserver exited during trial {len(trials)}: {note}")
            else:
                if len(trials) >= tuning.max_trials:
                    stopped = f"stopped at maxTrials {tuning.max_trials}"
    except (ServeError, ServerDied, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:600]
        stopped = "search ended early"
        log(f"tuning: {error}")
    seconds = time.monotonic() - began
    summary = summarize(trials, goal, seconds, stopped, error)
    log(f"tuning: {summary.message} ({len(trials)} trials, {seconds:.0f}s)")
    merged = None
    if summary.settings is not None:
        merged = merge_tuned(serving, summary.settings)
    return SearchResult(summary, trials, merged)


def _run_trial(
    triton: LocalTriton,
    name: str,
    signature: ModelSignature,
    serving: ServingSpec,
    platform: str,
    config: Config,
    samples: Sequence[Sample],
    tuning: TuningSpec,
) -> Trial:
    import tritonclient.grpc as grpcclient

    local = triton.local_repository
    assert local is not None
    try:
        text = trial_config_text(name, signature, serving, config, platform)
    except ValueError as exc:  # the renderer refuses this combination
        return Trial(config, failure=f"config refused: {exc}"[:300])
    (local / name / CONFIG_FILE).write_text(text)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        client.load_model(name, client_timeout=LOAD_TIMEOUT_S)
    except Exception as exc:  # InferenceServerException: Triton refused or failed the load
        if not triton.running:
            raise ServerDied(f"tritonserver exited loading a trial config: {exc}") from exc
        return Trial(config, failure=f"load failed: {exc}"[:300])
    finally:
        client.close()
    timeout = min(30.0, max(2.0, 20 * tuning.latency_budget_ms / 1000))
    windows: list[Window] = []
    for concurrency in sorted(tuning.concurrency):
        windows.append(
            measure_window(
                triton.grpc_url,
                name,
                samples,
                concurrency,
                tuning.warmup_seconds,
                tuning.trial_seconds,
                timeout,
            )
        )
    top = windows[-1]
    errors = sum(w.errors for w in windows)
    first_error = next((w.first_error for w in windows if w.first_error), None)
    return Trial(
        config,
        throughput_rps=top.throughput_rps,
        p50_ms=top.latency_ms["p50"],
        p99_ms=max(w.latency_ms["p99"] for w in windows),
        errors=errors,
        failure=f"{errors} requests failed: {first_error}" if errors else None,
        details=_details(windows),
    )


_ERROR_LINE = re.compile(r"\[E:|^E\d{4} |Signal \(\d+\) received|Status Message")


def death_note(log: str) -> str:
    """The error lines of a dead server's log (the model's error, the signal), bounded."""
    lines = [" ".join(line.split()) for line in log.splitlines() if _ERROR_LINE.search(line)]
    return " | ".join(line[:300] for line in lines[-2:]) or "no error in its log"


def _details(windows: Sequence[Window]) -> dict[str, Any]:
    top = windows[-1]
    server = top.server_ms()
    return {
        "concurrency": [w.concurrency for w in windows],
        "p99ByConcurrency": [round(w.latency_ms["p99"], 2) for w in windows],
        "meanBatch": round(top.server.inferences / top.server.executions, 2)
        if top.server.executions
        else 0.0,
        "queueMs": server.get("queue"),
        "computeInputMs": server.get("compute_input"),
        "computeInferMs": server.get("compute"),
        "computeOutputMs": server.get("compute_output"),
        "serverComputeMsPerRequest": round(top.server_busy_s_per_request() * 1000, 3),
        "clientCpuMsPerRequest": round(top.client_cpu_ms_per_request, 3),
    }


def _line(trial: Trial) -> str:
    settings = trial.config.settings().describe()
    if trial.failure:
        return f"{settings}: {trial.failure}"
    return (
        f"{settings}: {trial.throughput_rps:.1f} req/s, p50 {trial.p50_ms:.2f} ms, "
        f"p99 {trial.p99_ms:.2f} ms"
    )

"""How fast the real HPA follows a stepped load on Triton, and where it settles.

Starts the local control plane (optiserve_testing: kube-apiserver, kube-controller-manager with its
HPA controller at the default 15 s sync period, kube-scheduler, kwok nodes), the pod runner
that runs the Triton pods as real local servers, a real Prometheus scraping them every second,
and the custom metrics API behind an APIService (optiserve_testing/custom_metrics.py). It then
serves the digits CNN with the Service, Deployment and HPA optiserve renders and applies
closed-loop load in steps (``--steps clients:seconds,...``), spread over the Ready pods.

Every second it records the HPA's metric and desired replicas and the Deployment's Ready
replicas. For each step it reports the time from the load change to the HPA's first decision
to go above the replicas it had when the step began, and to the moment that many pods were
Ready, and the replicas at the step's end, how often the HPA scaled down while the load held,
and the metric's mean and spread over the step's second half.

``--signals`` runs the loop once per pendingRequests signal, each on a fresh cluster, one after
the other in the same invocation: ``window`` is the adapter rule optiserve ships (requests
queued on average over the rate window, by Little's law), ``gauge`` the baseline it replaced
(Triton's sampled ``nv_inference_pending_request_count``, patched into the test adapter here
only). Writes ``benchmarks/results/<name>.md`` (with the CPU model, instruction sets and load
average), a plot per signal (``<name>.png``: window, ``<name>_gauge.png``) and the samples
(``.csv``)::

    python benchmarks/hpa_scaling_bench.py --steps 0:30,4:90,16:120,0:150 --signals gauge,window

Prometheus scrapes every second here (a cluster: 15-30 s, which adds to each delay); the
HPA's own period and stabilization windows are the cluster defaults or the spec's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from optiserve.render.prometheus_adapter import adapter_rules
from optiserve_optimizer.machine import cpu_facts, load_average
from optiserve_testing import custom_metrics
from optiserve_testing.autoscaling_stack import (
    ServedModel,
    SpreadLoad,
    deploy_digits,
    digits_model,
    hpa_reading,
    metrics_pipeline,
    ready_pod_ips,
)
from optiserve_testing.binaries import ensure_binaries
from optiserve_testing.cluster import LocalCluster
from optiserve_testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Sample:
    t: float  # seconds since the first step began
    clients: int
    metric: float | None  # the HPA's current average value
    desired: int
    ready: int
    served_per_s: float


@dataclass
class Step:
    clients: int
    start: float
    end: float
    replicas_before: int = 1  # the HPA's desired replicas when the step began
    decision_s: float | None = None  # load change -> HPA desiredReplicas above the level before
    ready_s: float | None = None  # load change -> that many pods Ready
    settled: int = 0  # desiredReplicas at the end of the step
    scale_downs: int = 0  # times desiredReplicas fell during the step
    metric_mean: float | None = None  # over the step's second half
    metric_sd: float | None = None


# The pendingRequests rule before it was averaged: the gauge as sampled at each query.
GAUGE_QUERY = "sum by (<<.GroupBy>>) (nv_inference_pending_request_count{<<.LabelMatchers>>})"


def use_signal(signal: str) -> None:
    """Make the test adapter serve ``triton_pending_requests`` by ``signal``'s rule."""
    shipped = adapter_rules()
    if signal == "gauge":
        for rule in shipped:
            if rule["name"]["as"] == "triton_pending_requests":
                rule["seriesQuery"] = 'nv_inference_pending_request_count{namespace!="",pod!=""}'
                rule["name"]["matches"] = "^nv_inference_pending_request_count$"
                rule["metricsQuery"] = GAUGE_QUERY
    custom_metrics.adapter_rules = lambda: shipped  # type: ignore[attr-defined]


def parse_steps(text: str) -> list[tuple[int, float]]:
    steps = []
    for part in text.split(","):
        clients, _, seconds = part.partition(":")
        steps.append((int(clients), float(seconds)))
    return steps


def run(
    steps: list[tuple[int, float]], autoscaling_spec: dict[str, Any]
) -> tuple[list[Sample], list[Step]]:
    with LocalCluster(ensure_binaries()) as cluster:
        cluster.start_pod_runner()
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        cluster.kubectl("create", "namespace", namespace, check=True)
        cluster.wait_for_default_service_account(namespace)
        with metrics_pipeline(cluster):
            api = cluster.api_client()
            core, autoscaling = client.CoreV1Api(api), client.AutoscalingV2Api(api)
            served = deploy_digits(cluster, namespace, digits_model(autoscaling_spec))
            wait_until("first pod Ready", lambda: len(ready_pod_ips(core, served)) == 1, 300)
            wait_until("HPA metric", lambda: hpa_reading(autoscaling, served)[0] is not None, 120)
            return measure(core, autoscaling, served, steps)


def measure(
    core: client.CoreV1Api,
    autoscaling: client.AutoscalingV2Api,
    served: ServedModel,
    steps: list[tuple[int, float]],
) -> tuple[list[Sample], list[Step]]:
    samples: list[Sample] = []
    done: list[Step] = []
    with SpreadLoad(core, served) as load:
        began = time.monotonic()
        for clients, seconds in steps:
            desired_before = hpa_reading(autoscaling, served)[1]
            load.concurrency = clients
            step = Step(clients, time.monotonic() - began, 0.0, desired_before)
            last_completed, last_t = load.completed, time.monotonic()
            while time.monotonic() - began < step.start + seconds:
                time.sleep(1.0)
                now = time.monotonic()
                metric, desired = hpa_reading(autoscaling, served)
                ready = len(ready_pod_ips(core, served))
                rate = (load.completed - last_completed) / (now - last_t)
                last_completed, last_t = load.completed, now
                t = now - began
                samples.append(Sample(t, clients, metric, desired, ready, rate))
                print(
                    f"t={t:6.1f}s clients={clients:3d} metric={metric} desired={desired} "
                    f"ready={ready} served/s={rate:7.1f}",
                    flush=True,
                )
                if samples[-2:-1] and desired < samples[-2].desired:
                    step.scale_downs += 1
                if step.decision_s is None and desired > desired_before:
                    step.decision_s = t - step.start
                if step.decision_s is not None and step.ready_s is None and ready >= desired:
                    step.ready_s = t - step.start
            step.end = time.monotonic() - began
            step.settled = hpa_reading(autoscaling, served)[1]
            half = (step.start + step.end) / 2
            values = [x.metric for x in samples if x.t >= half and x.metric is not None]
            if len(values) > 1:
                step.metric_mean, step.metric_sd = statistics.mean(values), statistics.stdev(values)
            done.append(step)
    return samples, done


def table(steps: list[Step], spec: dict[str, Any], signal: str) -> str:
    lines = [
        f"Signal `{signal}`: HPA on `{spec['metric']}` target {spec['target']}, replicas "
        f"{spec['minReplicas']}-{spec['maxReplicas']}, scale-down window "
        f"{spec['scaleDownStabilizationSeconds']} s.",
        "",
        "| step | clients | seconds | replicas at start | first scale-up decision after "
        "| that many pods Ready after | replicas at the end | scale-downs in the step "
        "| metric mean ± sd (2nd half) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for index, step in enumerate(steps, 1):
        decision = "-" if step.decision_s is None else f"{step.decision_s:.0f} s"
        ready = "-" if step.ready_s is None else f"{step.ready_s:.0f} s"
        spread = (
            "-"
            if step.metric_mean is None or step.metric_sd is None
            else f"{step.metric_mean:.2f} ± {step.metric_sd:.2f}"
        )
        lines.append(
            f"| {index} | {step.clients} | {step.end - step.start:.0f} | {step.replicas_before} "
            f"| {decision} | {ready} | {step.settled} | {step.scale_downs} | {spread} |"
        )
    return "\n".join(lines)


def plot(samples: list[Sample], steps: list[Step], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [s.t for s in samples]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.step(times, [s.clients for s in samples], where="post", label="clients (load)")
    top.plot(
        times,
        [s.metric if s.metric is not None else float("nan") for s in samples],
        label=f"HPA metric ({metric} per pod)",
    )
    top.legend(loc="upper right")
    top.set_ylabel("requests")
    bottom.step(times, [s.desired for s in samples], where="post", label="HPA desired replicas")
    bottom.step(times, [s.ready for s in samples], where="post", label="Ready Triton pods")
    bottom.set_ylabel("replicas")
    bottom.set_xlabel("seconds since the first step")
    bottom.legend(loc="upper right")
    for step in steps:
        for axis in (top, bottom):
            axis.axvline(step.start, color="grey", linewidth=0.5)
    figure.suptitle(f"Real HPA scaling real Triton pods on Triton's {metric}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="0:30,4:90,16:120,0:120", help="clients:seconds,...")
    parser.add_argument(
        "--metric", default="pendingRequests", choices=["pendingRequests", "queueTime"]
    )
    parser.add_argument(
        "--signals",
        default="window",
        help="pendingRequests rules to run, in order: window (shipped), gauge (the old one)",
    )
    parser.add_argument("--target", default="2")
    parser.add_argument("--max-replicas", type=int, default=4)
    parser.add_argument("--scale-down-window", type=int, default=30, metavar="SECONDS")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="hpa_scaling", help="file name of the table and plot")
    args = parser.parse_args(argv)
    signals = [s.strip() for s in args.signals.split(",") if s.strip()]
    if not signals or set(signals) - {"window", "gauge"}:
        parser.error("--signals takes window and/or gauge")
    if args.metric != "pendingRequests" and signals != ["window"]:
        parser.error("--signals gauge compares pendingRequests rules only")
    spec = {
        "provider": "hpa",
        "metric": args.metric,
        "target": args.target,
        "minReplicas": 1,
        "maxReplicas": args.max_replicas,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": args.scale_down_window,
    }
    model, flags = cpu_facts()
    load_before = load_average()
    sections = []
    args.out.mkdir(parents=True, exist_ok=True)
    for signal in signals:
        use_signal(signal)
        samples, steps = run(parse_steps(args.steps), spec)
        suffix = "" if signal == "window" else f"_{signal}"
        plot(samples, steps, f"{args.metric} ({signal})", args.out / f"{args.name}{suffix}.png")
        with (args.out / f"{args.name}{suffix}.csv").open("w") as table_file:
            table_file.write("t,clients,metric,desired,ready,served_per_s\n")
            for x in samples:
                metric = "" if x.metric is None else f"{x.metric:g}"
                table_file.write(
                    f"{x.t:.1f},{x.clients},{metric},{x.desired},{x.ready},{x.served_per_s:.1f}\n"
                )
        sections.append(table(steps, spec, signal) + f"\n\nLoad average after: {load_average()}.")
    text = (
        "# HPA scaling benchmark (local cluster, real Triton pods)\n\n"
        f"`python benchmarks/hpa_scaling_bench.py --steps {args.steps} --metric {args.metric} "
        f"--signals {','.join(signals)} --name {args.name} "
        f"--target {args.target} --max-replicas {args.max_replicas} --scale-down-window "
        f"{args.scale_down_window}`\n\n"
        f"CPU: {model} ({os.cpu_count()} logical CPUs; {', '.join(flags) or 'none of the listed'}"
        f"); load average (1, 5, 15 min) before: {load_before}. The signals ran one after the "
        "other, each on a fresh local cluster.\n\n" + "\n\n".join(sections) + "\n"
    )
    (args.out / f"{args.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

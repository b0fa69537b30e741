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
Ready, and the replicas at the step's end. Writes ``benchmarks/results/<name>.md``, a plot
(``.png``) and the samples (``.csv``), ``--name`` defaulting to ``hpa_scaling``::

    python benchmarks/hpa_scaling_bench.py --steps 0:30,4:90,16:120,0:150

Prometheus scrapes every second here (a cluster: 15-30 s, which adds to each delay); the
HPA's own period and stabilization windows are the cluster defaults or the spec's.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

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
                if step.decision_s is None and desired > desired_before:
                    step.decision_s = t - step.start
                if step.decision_s is not None and step.ready_s is None and ready >= desired:
                    step.ready_s = t - step.start
            step.end = time.monotonic() - began
            step.settled = hpa_reading(autoscaling, served)[1]
            done.append(step)
    return samples, done


def table(steps: list[Step], spec: dict[str, Any]) -> str:
    lines = [
        f"HPA on `{spec['metric']}` target {spec['target']}, replicas {spec['minReplicas']}-"
        f"{spec['maxReplicas']}, scale-down window {spec['scaleDownStabilizationSeconds']} s.",
        "",
        "| step | clients | seconds | replicas at start | first scale-up decision after "
        "| that many pods Ready after | replicas at the end |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for index, step in enumerate(steps, 1):
        decision = "-" if step.decision_s is None else f"{step.decision_s:.0f} s"
        ready = "-" if step.ready_s is None else f"{step.ready_s:.0f} s"
        lines.append(
            f"| {index} | {step.clients} | {step.end - step.start:.0f} | {step.replicas_before} "
            f"| {decision} | {ready} | {step.settled} |"
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
    parser.add_argument("--target", default="2")
    parser.add_argument("--max-replicas", type=int, default=4)
    parser.add_argument("--scale-down-window", type=int, default=30, metavar="SECONDS")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="hpa_scaling", help="file name of the table and plot")
    args = parser.parse_args(argv)
    spec = {
        "provider": "hpa",
        "metric": args.metric,
        "target": args.target,
        "minReplicas": 1,
        "maxReplicas": args.max_replicas,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": args.scale_down_window,
    }
    samples, steps = run(parse_steps(args.steps), spec)
    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    text = (
        "# HPA scaling benchmark (local cluster, real Triton pods)\n\n"
        f"`python benchmarks/hpa_scaling_bench.py --steps {args.steps} --metric {args.metric} "
        f"--name {args.name} "
        f"--target {args.target} --max-replicas {args.max_replicas} --scale-down-window "
        f"{args.scale_down_window}` on {os.cpu_count()} CPUs "
        f"(load average {load:.1f} at the end).\n\n" + table(steps, spec) + "\n"
    )
    (args.out / f"{args.name}.md").write_text(text)
    plot(samples, steps, args.metric, args.out / f"{args.name}.png")
    with (args.out / f"{args.name}.csv").open("w") as table_file:
        table_file.write("t,clients,metric,desired,ready,served_per_s\n")
        for x in samples:
            metric = "" if x.metric is None else f"{x.metric:g}"
            table_file.write(
                f"{x.t:.1f},{x.clients},{metric},{x.desired},{x.ready},{x.served_per_s:.1f}\n"
            )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

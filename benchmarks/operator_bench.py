"""Operator benchmarks; prints a table.

1. ``plan`` throughput: reconcile decisions per second for N OptimizedModels at each stage
   (new, optimizing, deploying, ready) -- the CPU cost of a pass without API calls.
2. With ``--cluster`` (needs the optiserve_testing control plane): N models applied at once to a
   running operator; time from apply to Ready for all, and to the first Job (the operator's
   own latency, optimizer time excluded as far as the optimizer reuses its artifact).

    python benchmarks/operator_bench.py [--models 200] [--cluster --cluster-models 20]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in ("src", "operator", "optimizer", "."):
    sys.path.insert(0, str(ROOT / extra))

from optiserve.api import OptimizedModel  # noqa: E402
from optiserve.render.kubernetes import job_name  # noqa: E402
from optiserve_operator.reconcile import recipe_digest  # noqa: E402
from tests.operator.helpers import BASE, deployment, job, model, run, summary_message  # noqa: E402


def _specs(count: int) -> list[Any]:
    specs = []
    for i in range(count):
        obj = copy.deepcopy(BASE)
        obj["spec"]["source"]["uri"] = f"pvc://models/m{i}.onnx"
        specs.append(OptimizedModel.model_validate(obj).spec)
    return specs


def bench_plan(count: int) -> list[tuple[str, int, float]]:
    rows = []
    specs = _specs(count)
    stages: dict[str, list[Any]] = {"new": [], "optimizing": [], "deploying": [], "ready": []}
    for spec in specs:
        digest = recipe_digest("digits", spec)
        name = job_name("digits", digest)
        new = model(spec)
        started = run(new).status
        done = job(name, digest, "succeeded", summary_message(digest))
        deploying = run(model(spec, started), jobs=(done,)).status
        stages["new"].append((new, (), None))
        stages["optimizing"].append((model(spec, started), (job(name, digest, "active"),), None))
        stages["deploying"].append((model(spec, deploying), (done,), None))
        stages["ready"].append((model(spec, deploying), (done,), deployment(digest)))
    for stage, cases in stages.items():
        began = time.perf_counter()
        for state, jobs, dep in cases:
            run(state, jobs=jobs, dep=dep)
        elapsed = time.perf_counter() - began
        rows.append((f"plan() {stage}", count, count / elapsed))
    return rows


def bench_cluster(count: int) -> list[tuple[str, int, float]]:
    import tempfile

    from optiserve_testing.binaries import ensure_binaries
    from optiserve_testing.cluster import LocalCluster
    from tests.e2e.conftest import OperatorProcess, install_crd, prepare_model_namespace
    from tests.e2e.objects import tiny

    rows = []
    with LocalCluster(ensure_binaries()) as cluster:
        cluster.start_pod_runner()
        install_crd(cluster)
        ns = "bench"
        prepare_model_namespace(cluster, ns)
        operator = OperatorProcess(cluster, Path(tempfile.mkdtemp()))
        operator.start()
        try:
            began = time.monotonic()
            cluster.apply([tiny(f"b{i}") for i in range(count)], namespace=ns)
            first_job = None
            while True:
                out = cluster.kubectl("get", "om", "-n", ns, "--no-headers").stdout.splitlines()
                if (
                    first_job is None
                    and cluster.kubectl("get", "jobs", "-n", ns, "--no-headers").stdout.strip()
                ):
                    first_job = time.monotonic() - began
                ready = sum(1 for line in out if line.split()[1:2] == ["Ready"])
                if ready == count:
                    break
                if time.monotonic() - began > 900:
                    raise TimeoutError(f"only {ready}/{count} Ready after 900s")
                time.sleep(1)
            total = time.monotonic() - began
        finally:
            operator.stop()
        rows.append(("apply -> first Job", count, first_job or 0.0))
        rows.append(("apply -> all Ready", count, total))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--cluster-models", type=int, default=20)
    args = parser.parse_args()
    rows = bench_plan(args.models)
    if args.cluster:
        rows += bench_cluster(args.cluster_models)
    print(f"| {'measure':<28} | {'models':>6} | {'value':>10} | {'unit':<8} |")
    print(f"|{'-' * 30}|{'-' * 8}|{'-' * 12}|{'-' * 10}|")
    for name, count, value in rows:
        unit = "passes/s" if name.startswith("plan") else "s"
        print(f"| {name:<28} | {count:>6} | {value:>10.1f} | {unit:<8} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

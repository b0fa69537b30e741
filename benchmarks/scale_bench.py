"""N OptimizedModels on the real local control plane: Ready rate, memory, writes, deletion.

The models' artifacts already exist (tests/e2e/scale.py: each status names its finished
artifact, written while the operator is paused), so the optimizer is not what is measured; the
Triton pods are kwok's. Steps, one operator process unless said otherwise:

1. idle: the operator's RSS with one model (``probe``) Ready.
2. burst: N models appear at once (the operator resumed); Ready over time, the peak RSS, and
   ``probe``'s latency: its spec changes 3 s into the burst, while the others are busy.
3. settle: RSS after the burst, and the operator's writes while nothing changes.
4. re-apply: ``kubectl apply`` of the same N: the operator's mutating requests (audit log).
5. restart: the operator restarted, so every model is reconciled from scratch: its writes.
6. delete: ``kubectl delete`` of all N: time until no child is left, RSS then and a minute
   later.

    python benchmarks/scale_bench.py --models 1000   # writes benchmarks/results/scale.{md,png}
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.e2e.scale (shared with the CI test) uses e2e fixtures

from optiserve_testing.binaries import control_plane_binaries  # noqa: E402
from optiserve_testing.waiting import wait_until  # noqa: E402
from tests.e2e.scale import (  # noqa: E402
    Fleet,
    RssSampler,
    is_ready,
    observed,
    rss_mib,
    spec_change,
)

RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if "model name" in ln), "")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    wanted = ("sse4_2", "avx", "avx2", "avx512f", "avx512_vnni", "amx_int8")
    return {
        "cpu": model or platform.processor(),
        "isa": " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted),
        "threads": str(os.cpu_count()),
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def settled_rss(sampler: RssSampler, seconds: float) -> float:
    """The median RSS over the next ``seconds``."""
    start = time.monotonic()
    time.sleep(seconds)
    window = [m for t, m in sampler.samples if t >= start]
    return statistics.median(window) if window else 0.0


class ReadyWatch:
    """Which models are Ready, kept from one watch of the models in a thread.

    Listing a thousand models every second to count the Ready ones cost the API server (a
    quorum read: each object read from etcd, decoded and encoded again) and this script about
    as much CPU as the operator's burst on the same two cores; a watch costs an event a change.
    """

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.ready: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ready-watch")
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        args = ("optiserve.io", "v1alpha1", self.fleet.namespace, "optimizedmodels")
        while not self._stop.is_set():
            try:
                listing = cast(
                    dict[str, Any], self.fleet.custom.list_namespaced_custom_object(*args)
                )
                self.ready = {o["metadata"]["name"]: is_ready(o) for o in listing["items"]}
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.fleet.custom.list_namespaced_custom_object,
                    *args,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=60,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        self.ready.pop(obj["metadata"]["name"], None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self.ready[obj["metadata"]["name"]] = is_ready(obj)
                    else:  # an ERROR (410 Gone): list afresh
                        break
            except Exception:  # the watch broke: list afresh
                time.sleep(1)

    def count(self, names: set[str]) -> int:
        return sum(1 for name, ready in list(self.ready.items()) if ready and name in names)

    def timeline(self, names: set[str], timeout_s: float) -> Iterator[tuple[float, int]]:
        """(seconds since the call, models of ``names`` Ready) every second until all are."""
        started = time.monotonic()
        while True:
            ready = self.count(names)
            elapsed = time.monotonic() - started
            yield elapsed, ready
            if ready >= len(names) or elapsed > timeout_s:
                return
            time.sleep(1.0)

    def stop(self) -> None:
        self._stop.set()


def probe_latency(fleet: Fleet, delay_s: float, out: dict[str, float]) -> threading.Thread:
    """Change ``probe``'s spec ``delay_s`` into the burst; seconds until it is reconciled."""

    def run() -> None:
        time.sleep(delay_s)
        depth = fleet.metric("optiserve_workqueue_depth")
        began = time.monotonic()
        generation = spec_change(fleet, "probe", 2)
        while not observed(fleet, "probe", generation):
            time.sleep(0.1)
        out["latency_s"] = time.monotonic() - began
        out["queue_depth"] = depth

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def fmt_writes(writes: Counter[str]) -> str:
    total = sum(writes.values())
    detail = ", ".join(f"{k} {v}" for k, v in writes.most_common())
    return f"{total}" + (f" ({detail})" if detail else "")


def per_model(requests: Counter[str], models: int) -> str:
    """Requests per model, in all and by ``verb resource`` (the audit log's count)."""
    total = sum(requests.values())
    detail = ", ".join(f"{k} {v / models:.2f}" for k, v in requests.most_common())
    return f"{total / models:.2f} ({detail})"


def bench(
    models: int,
    timeout_s: float,
    operator_args: tuple[str, ...],
    profile: Path | None = None,
    burst_only: bool = False,
) -> dict[str, Any]:
    fleet = Fleet(control_plane_binaries(), models)
    r: dict[str, Any] = {"models": models, "load_start": load(), "operator_args": operator_args}
    try:
        fleet.start(operator_args)
        wait_until("operator metrics", lambda: _metrics_up(fleet), timeout_s=60, every_s=0.5)
        sampler = RssSampler(fleet.pid)
        tracker = ReadyWatch(fleet)
        fleet.create_seeded(["probe"])
        wait_until("probe Ready", lambda: fleet.ready({"probe"}) == 1, timeout_s=120)
        r["rss_idle"] = settled_rss(sampler, 10)

        names = fleet.names()
        # Read while the operator runs (it serves its metrics); paused, nothing moves.
        cpu0 = cpu_seconds(fleet.pid)
        cpu_by0 = cpu_by_process(fleet)
        requests0 = fleet.metric("optiserve_api_requests_total")
        reconciles0 = fleet.metric("optiserve_reconciles_total")
        fleet.pause_operator()
        t_apply = time.monotonic()
        fleet.apply(names)
        fleet.seed(names)
        r["create_s"] = time.monotonic() - t_apply
        burst_mark = fleet.audit.mark()
        t0 = time.monotonic()
        fleet.resume_operator()
        profiler = start_profiler(fleet.pid, profile) if profile else None
        probe: dict[str, float] = {}
        prober = probe_latency(fleet, 3.0, probe)
        timeline = list(tracker.timeline(set(names), timeout_s))
        tracker.stop()
        t_done = time.monotonic()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its profile and exits
            profiler.wait(timeout=120)
        prober.join(timeout=120)
        r["timeline"] = timeline
        r["burst_s"] = timeline[-1][0]
        r["ready"] = timeline[-1][1]
        r["rate"] = r["ready"] / r["burst_s"] if r["burst_s"] else 0.0
        # Ready count crossing 10% and 90%: the steady rate, without start-up and tail.
        r["rate_10_90"] = _steady_rate(timeline, models)
        r["probe"] = probe
        r["rss_peak"] = sampler.peak(t0, t_done)
        r["burst_writes"] = fleet.audit.writes_since(burst_mark)
        r["burst_requests"] = fleet.audit.requests_since(burst_mark)
        r["reconciles"] = fleet.metric("optiserve_reconciles_total") - reconciles0
        r["requests"] = fleet.metric("optiserve_api_requests_total") - requests0
        r["cpu_s"] = cpu_seconds(fleet.pid) - cpu0
        r["cpu_by_process"] = {
            name: seconds - cpu_by0.get(name, 0.0)
            for name, seconds in cpu_by_process(fleet).items()
        }
        r["burst_load"] = load()

        if burst_only:
            r["load_end"] = load()
            return r
        quiet_mark = fleet.audit.mark()
        r["rss_after"] = settled_rss(sampler, 20)
        r["quiet_writes"] = fleet.audit.writes_since(quiet_mark)

        mark = fleet.audit.mark()
        started = time.monotonic()
        output = fleet.apply(names)
        r["reapply_s"] = time.monotonic() - started
        r["reapply_unchanged"] = output.count(" unchanged")
        time.sleep(15)
        r["reapply_writes"] = fleet.audit.writes_since(mark)

        mark = fleet.audit.mark()
        assert fleet.operator is not None
        fleet.operator.stop()
        sampler.stop()
        fleet.operator.start()
        restarted = RssSampler(fleet.pid)
        wait_until("operator metrics", lambda: _metrics_up(fleet), timeout_s=60, every_s=0.5)
        started = time.monotonic()
        wait_until(
            "every model reconciled after the restart",
            lambda: fleet.metric("optiserve_reconciles_total") >= models + 1,
            timeout_s=timeout_s,
        )
        r["restart_pass_s"] = time.monotonic() - started
        time.sleep(5)
        r["restart_writes"] = fleet.audit.writes_since(mark)
        r["restart_errors"] = fleet.metric("optiserve_reconcile_errors_total")
        r["restart_requests"] = fleet.audit.requests_since(mark)
        r["restart_rss_peak"] = restarted.peak()
        r["rss_idle_restarted"] = r["rss_idle"]

        mark = fleet.audit.mark()
        started = time.monotonic()
        fleet.cluster.kubectl(
            "delete",
            "om",
            "--all",
            "-n",
            fleet.namespace,
            "--wait=false",
            check=True,
            timeout_s=300,
        )
        wait_until(
            "every child gone",
            lambda: not any(fleet.children().values()) and not fleet.models(),
            timeout_s=timeout_s,
            every_s=2,
        )
        r["delete_s"] = time.monotonic() - started
        r["rss_after_delete"] = settled_rss(restarted, 20)
        # The operator gives freed memory back once it has been quiet a while (memory.py).
        time.sleep(40)
        r["rss_after_delete_later"] = settled_rss(restarted, 20)
        r["delete_writes"] = fleet.audit.writes_since(mark)
        r["children_left"] = fleet.children()
        restarted.stop()
        r["load_end"] = load()
        return r
    finally:
        fleet.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (load-independent cost)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (``pip install py-spy``, on PATH) sampling the operator's threads until SIGINT."""
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--threads", "--rate", "50", "--output", str(out)]
        + (["--format", "raw"] if out.suffix == ".txt" else []),
        stdout=subprocess.DEVNULL,
    )


def cpu_by_process(fleet: Fleet) -> dict[str, float]:
    """CPU seconds so far of the operator, each control plane process, and this script
    (its own threads: the Ready tracking), to see what the burst's CPU goes to."""
    found = {"operator": cpu_seconds(fleet.pid)}
    for name, pid in fleet.cluster.process_ids().items():
        with contextlib.suppress(OSError):
            found[name] = cpu_seconds(pid)
    own = os.times()
    found["benchmark"] = own.user + own.system
    return found


def _metrics_up(fleet: Fleet) -> bool:
    try:
        fleet.metric("optiserve_workqueue_depth")
    except OSError:
        return False
    return rss_mib(fleet.pid) is not None


def _steady_rate(timeline: list[tuple[float, int]], models: int) -> float:
    low = next((t for t, n in timeline if n >= 0.1 * models), None)
    high = next((t for t, n in timeline if n >= 0.9 * models), None)
    if low is None or high is None or high <= low:
        return 0.0
    return 0.8 * models / (high - low)


def table(r: dict[str, Any], info: dict[str, str]) -> str:
    probe = r["probe"]
    rows = [
        ("models Ready", f"{r['ready']} / {r['models']} in {r['burst_s']:.1f} s"),
        ("Ready rate, whole burst", f"{r['rate']:.2f} models/s"),
        ("Ready rate, 10% to 90%", f"{r['rate_10_90']:.2f} models/s"),
        ("reconcile passes in the burst", f"{r['reconciles']:.0f}"),
        (
            "operator API requests / CPU in the burst",
            f"{r['requests']:.0f} requests; {r['cpu_s']:.1f} CPU s "
            f"({1000 * r['cpu_s'] / max(r['reconciles'], 1):.0f} ms a pass)",
        ),
        (
            "CPU s in the burst by process",
            ", ".join(
                f"{name} {seconds:.1f}"
                for name, seconds in sorted(r["cpu_by_process"].items(), key=lambda kv: -kv[1])
            )
            + f" (of {(os.cpu_count() or 1) * r['burst_s']:.0f} CPU s on {os.cpu_count()} threads;"
            + f" load then {r['burst_load']})",
        ),
        ("operator writes in the burst", fmt_writes(r["burst_writes"])),
        (
            "operator requests per model in the burst (audit log)",
            per_model(r["burst_requests"], r["models"]),
        ),
        ("creating + seeding the N models (kubectl)", f"{r['create_s']:.1f} s"),
        (
            "probe's spec change reconciled (3 s into the burst)",
            f"{probe.get('latency_s', float('nan')):.2f} s "
            f"(queue depth then {probe.get('queue_depth', float('nan')):.0f})",
        ),
        ("operator RSS idle (1 model)", f"{r['rss_idle']:.0f} MiB"),
        ("operator RSS peak in the burst", f"{r['rss_peak']:.0f} MiB"),
    ]
    if "rss_after" in r:  # not with --burst-only
        rows += later_rows(r)
    width = max(len(a) for a, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {a.ljust(width)} | {b} |" for a, b in rows]
    lines.append("")
    lines.append(
        f"CPU {info['cpu']}; {info['threads']} threads; instruction sets {info['isa']}; "
        f"load average (1, 5, 15 min) {r['load_start']} at the start, {r['load_end']} at the end "
        f"(the machine is shared). Operator flags beyond the defaults: "
        f"{' '.join(r['operator_args']) or 'none'}; operator environment "
        f"{operator_allocator()}; kube-controller-manager at --kube-api-qps=300 "
        "--kube-api-burst=500 (its defaults, 20/30, pace the Deployments, not the operator)."
    )
    return "\n".join(lines)


def operator_allocator() -> str:
    """The allocator setting the operator runs with (tests/e2e/conftest.py: the image's,
    unless this process's environment names another)."""
    from optiserve_operator.memory import ALLOCATOR_ENV

    env = {**ALLOCATOR_ENV, **os.environ}
    return " ".join(f"{k}={env.get(k, '')}" for k in ALLOCATOR_ENV)


def later_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """After the burst: quiet, re-apply, restart, deletion."""
    return [
        ("operator RSS after the burst (median of 20 s)", f"{r['rss_after']:.0f} MiB"),
        ("operator writes in those 20 s", fmt_writes(r["quiet_writes"])),
        (
            "re-apply: kubectl apply of the same N",
            f"{r['reapply_unchanged']} unchanged, {r['reapply_s']:.1f} s",
        ),
        ("operator writes, re-apply + 15 s", fmt_writes(r["reapply_writes"])),
        ("restart: every model reconciled again in", f"{r['restart_pass_s']:.1f} s"),
        ("operator writes after the restart", fmt_writes(r["restart_writes"])),
        ("failed passes after the restart", f"{r['restart_errors']:.0f}"),
        (
            "operator requests per model after the restart",
            per_model(r["restart_requests"], r["models"] + 1),
        ),
        ("restarted operator RSS peak", f"{r['restart_rss_peak']:.0f} MiB"),
        ("delete all: every child gone in", f"{r['delete_s']:.1f} s"),
        ("children left", str(sum(r["children_left"].values()))),
        ("operator writes in the deletion", fmt_writes(r["delete_writes"])),
        ("restarted operator RSS after the deletion", f"{r['rss_after_delete']:.0f} MiB"),
        (
            "the same, from 60 s to 80 s after the deletion",
            f"{r['rss_after_delete_later']:.0f} MiB",
        ),
    ]


def plot(timeline: list[tuple[float, int]], models: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([t for t, _ in timeline], [n for _, n in timeline], label="Ready")
    ax.axhline(models, color="grey", linestyle=":", linewidth=1)
    slope = [5.0 * t for t, _ in timeline]
    ax.plot(
        [t for t, _ in timeline],
        [min(s, models) for s in slope],
        "--",
        color="red",
        linewidth=1,
        label="5 models/s",
    )
    ax.set_xlabel("seconds since the models appeared")
    ax.set_ylabel("OptimizedModels Ready")
    ax.set_title(f"{models} OptimizedModels with existing artifacts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--burst-only", action="store_true", help="stop after the burst (quick comparisons)"
    )
    parser.add_argument(
        "--operator-arg",
        action="append",
        default=[],
        help="an extra flag for the operator, e.g. --operator-arg=--api-qps=100 (repeatable)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record the operator with py-spy during the burst (.svg flame graph, .txt folded)",
    )
    args = parser.parse_args()
    info = machine()
    r = bench(args.models, args.timeout, tuple(args.operator_arg), args.profile, args.burst_only)
    text = table(r, info)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        header = (
            f"# Scale: {args.models} OptimizedModels\n\n"
            f"`python benchmarks/scale_bench.py {' '.join(sys.argv[1:])}` "
            "(see its docstring for the steps).\n\n"
        )
        (RESULTS / "scale.md").write_text(header + text + "\n")
        plot(r["timeline"], args.models, RESULTS / "scale.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

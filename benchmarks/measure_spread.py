"""How far does the reported speedup move? The optimizer's measurement, rerun on one artifact.

    OPTISERVE_THREADS=1 python benchmarks/measure_spread.py [--runs 5] [--spec SPEC.yaml]
        [--workdir DIR] [--update-readme]

1. builds the spec's example model (examples/make_models.py) and runs the optimizer once (a
   finished artifact of the same recipe is reused);
2. ``--runs`` times, each in a fresh process, builds the runners the pipeline builds (the
   source in its own framework, onnxruntime FP32 of the exported model, the packaged model)
   and calls the pipeline's own ``optiserve_optimizer.measure.measure`` with the spec's
   benchmark settings;
3. prints, and writes to ``benchmarks/results/measure_spread.md``, one row per run (speedup
   against both baselines, the per-round range, the load) and the spread of the reported
   speedup over the runs, with the command, date, CPU, instruction sets, threads and load.
   ``--update-readme`` copies that block verbatim into README.md between its markers.

Not run in CI: it measures this machine, it does not check the code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "optimizer")]

RESULTS = ROOT / "benchmarks" / "results" / "measure_spread.md"
README_BEGIN = "<!-- begin: benchmarks/measure_spread.py -->"
README_END = "<!-- end: benchmarks/measure_spread.py -->"
DEFAULT_WORKDIR = Path.home() / ".cache" / "optiserve" / "measure-spread"


def optimize_once(spec_file: Path, workdir: Path) -> tuple[Any, Path, dict[str, Any]]:
    """(the request, the artifact folder, its report): built, or reused when it exists."""
    from optiserve.validate import load_one
    from optiserve_optimizer.main import load_request, run_optimize

    model = load_one(spec_file)
    os.environ["OPTISERVE_PVC_ROOT"] = str(workdir / "pvc")
    only = "minilm" if "minilm" in model.spec.source.uri else "digits"
    models = workdir / "pvc" / "models"
    if not (models / only / "eval.npz").exists():
        make = [sys.executable, str(ROOT / "examples" / "make_models.py"), "--out", str(models)]
        subprocess.run([*make, "--only", only], check=True)
    summary_file = workdir / "summary.json"
    os.environ["OPTISERVE_TERMINATION_LOG"] = str(summary_file)
    if run_optimize(spec_file, workdir / "artifacts") != 0:
        raise SystemExit("the optimizer failed; see above")
    summary = json.loads(summary_file.read_text())
    folder = Path(summary["folder"])
    return load_request(spec_file), folder, json.loads((folder / "report.json").read_text())


def measure_once(request: Any, folder: Path) -> dict[str, Any]:
    """One measurement of the packaged model against the pipeline's baselines, as the
    pipeline makes it (same export, same runners, same ``measure`` and settings)."""
    from optiserve.uri import local_path
    from optiserve_optimizer import data
    from optiserve_optimizer.artifact import PassContext
    from optiserve_optimizer.measure import measure
    from optiserve_optimizer.onnx_utils import load_model, signature, threads
    from optiserve_optimizer.passes.load_export import LoadExport
    from optiserve_optimizer.progress import Progress
    from optiserve_optimizer.runners import ORT_BASELINE, baseline_runners, runner_for

    spec = request.optimization
    served = next((folder / "model_repository").glob("*/1/model.*"))
    with tempfile.TemporaryDirectory() as tmp, Path(os.devnull).open("w") as quiet:
        ctx = PassContext(request.source, spec, Path(tmp), Progress(stream=quiet))
        original = LoadExport().run(None, {}, ctx).artifact  # the same export the Job made
        names = [t.name for t in signature(load_model(original.onnx, "benchmark")).inputs]
        # the first rows, as the Job times them (measure runs the largest batch at most)
        arrays = data.load(
            local_path(spec.accuracy.dataset), names, max(spec.benchmark.batch_sizes)
        )
        device = spec.target.device
        baseline, runners = baseline_runners(original.torch, original.onnx, device, names)
        runners["packaged"] = runner_for(served, device, names)
        result = measure(
            runners,
            arrays,
            spec.benchmark.batch_sizes,
            warmup=spec.benchmark.warmup,
            iterations=spec.benchmark.iterations,
            rounds=spec.benchmark.rounds,
            threads=threads(),
            device=device,
        )
    versus = result.speedup("packaged", baseline)
    ort = result.speedup("packaged", ORT_BASELINE) if baseline != ORT_BASELINE else None
    return {
        "baseline": baseline,
        "speedup": versus.as_dict() | {"text": versus.ratio_text(), "range": versus.range_text()},
        "ort": ort.ratio_text() if ort is not None else None,
        "conditions": result.conditions.as_dict(),
    }


def rerun(spec_file: Path, workdir: Path, runs: int) -> list[dict[str, Any]]:
    """``runs`` measurements, each in a fresh process (as each Job is one), so what varies
    between processes (memory layout, thread placement, JIT state) shows in the spread."""
    rows = []
    for run in range(1, runs + 1):
        once = [sys.executable, str(Path(__file__).resolve()), "--measure-once"]
        done = subprocess.run(
            [*once, "--spec", str(spec_file), "--workdir", str(workdir)],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(done.stdout.strip().splitlines()[-1]) | {"run": run}
        print(f"run {run}: {row['speedup']['text']} ({row['speedup']['range']})", file=sys.stderr)
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]], report: dict[str, Any], command: str) -> str:
    first = rows[0]["conditions"]
    loads = [r["conditions"]["loadBefore"][0] for r in rows]
    reported = [r["speedup"]["median"] for r in rows]
    middle = statistics.median(reported)
    half_range = (max(reported) - min(reported)) / 2 / middle
    baseline = rows[0]["baseline"]
    clock = "process CPU time" if first["clock"] == "cpu" else "elapsed time"
    lines = [
        f"`{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"- CPU: {first['cpu']} ({first['logicalCpus']} logical CPUs, {platform.machine()})",
        f"- instruction sets: {' '.join(first['instructionSets']) or '-'}",
        f"- threads: {first['threads']} intra-op (torch and onnxruntime alike); clock: "
        f"{first['clock']} ({clock})",
        f"- load average (1 min) before each run: {', '.join(f'{x:.2f}' for x in loads)}",
        f"- per run (a fresh process each): {first['rounds']} interleaved rounds, "
        f">= {first['perRound']} calls and >= {first['minRoundSeconds']:g} s per runner, "
        f"batch size and round; throughput at batch {first['throughputBatch']}",
        f"- artifact: {report['name']} `{report['chosen']}` ({report['artifact']['precision']}), "
        f"recipe {report['recipeDigest'][:12]}",
        "",
        f"| run | speedup vs {baseline} | per-round range | vs onnxruntime-fp32 | load before |",
        "|---|---|---|---|---|",
        f"| optimizer (report) | {report['metrics']['speedup']} | "
        f"{report['metrics'].get('speedupRange', '-')} | "
        f"{report['metrics'].get('speedupVsOnnxruntime', '-')} | "
        f"{report['measurement']['loadBefore'][0]:.2f} |",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['speedup']['text']} | {row['speedup']['range']} | "
            f"{row['ort'] or '(same)'} | {row['conditions']['loadBefore'][0]:.2f} |"
        )
    lines += [
        "",
        f"Reported speedup over {len(rows)} reruns: median {middle:.2f}x, "
        f"min {min(reported):.2f}x, max {max(reported):.2f}x, "
        f"spread +-{half_range:.1%} of the median.",
    ]
    own = float(str(report["metrics"]["speedup"]).rstrip("x"))
    every = [*reported, own]
    lines.append(
        f"With the optimizer's own figure ({own:.2f}x): {min(every):.2f}x-{max(every):.2f}x, "
        f"+-{(max(every) - min(every)) / 2 / statistics.median(every):.1%}."
    )
    return "\n".join(lines) + "\n"


def update_readme(block: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"README.md has no {README_BEGIN} ... {README_END} block")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{block}{README_END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--spec", type=Path, default=ROOT / "examples" / "digits-pruned-int8.yaml")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--measure-once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    script = Path(sys.argv[0]).resolve().relative_to(ROOT).as_posix()
    threads = os.environ.get("OPTISERVE_THREADS", "")
    command = " ".join([f"OPTISERVE_THREADS={threads}", "python", script, *sys.argv[1:]])
    if args.measure_once:  # the child of ``rerun``: one measurement, as JSON
        os.environ["OPTISERVE_PVC_ROOT"] = str(args.workdir / "pvc")
        from optiserve_optimizer.main import load_request

        summary = json.loads((args.workdir / "summary.json").read_text())
        print(json.dumps(measure_once(load_request(args.spec), Path(summary["folder"]))))
        return 0
    _, _, report = optimize_once(args.spec.resolve(), args.workdir)
    rows = rerun(args.spec.resolve(), args.workdir, args.runs)
    block = render(rows, report, command)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("# Spread of the reported speedup\n\n" + block)
    if args.update_readme:
        update_readme(block)
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

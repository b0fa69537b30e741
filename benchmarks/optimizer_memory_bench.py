"""The optimizer's peak RSS on all-MiniLM-L6-v2 as the calibration and eval sets grow.

Runs the whole optimizer (``python -m optiserve_optimizer.main SPEC --out DIR``: export, INT8
static QDQ calibrated on the calibration set, the accuracy gate on the eval set, benchmark,
packaging) once per dataset size, each in a fresh process, and reads its peak resident memory
twice: ``report.json``'s ``memory.peakRssBytes`` (the optimizer up to packaging) and the
process's ``ru_maxrss`` from ``wait4`` (the whole run). What grows with the dataset is what the
optimizer holds per sample; the rest is onnxruntime, torch and the model.

    OPTISERVE_THREADS=2 python benchmarks/optimizer_memory_bench.py [--sizes 256,2048]
        [--code DIR --label base]   # DIR: another checkout's root, to compare code versions

Prints a table with the CPU model, its instruction sets, threads and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "optimizer")]

from optiserve_optimizer.machine import INSTRUCTION_SETS, cpu_facts  # noqa: E402
from optiserve_optimizer.models import minilm  # noqa: E402

MIB = 2**20


def machine() -> str:
    model, flags = cpu_facts()
    isa = " ".join(flags) or "none of " + ", ".join(INSTRUCTION_SETS)
    threads = os.environ.get("OPTISERVE_THREADS", "(default)")
    return f"CPU {model}; ISA {isa}; {os.cpu_count()} CPUs; OPTISERVE_THREADS={threads}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_model(folder: Path) -> Path:
    """The ONNX model, made in a child: torch never loads here, so this process stays small
    (a child's ``ru_maxrss`` starts from its parent's resident size at the fork)."""
    code = (
        "import sys; from pathlib import Path; from optiserve_optimizer.models import minilm; "
        "minilm.make_minilm(Path(sys.argv[1]), eval_count=8, calib_count=8)"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'optimizer'}"}
    subprocess.run([sys.executable, "-c", code, str(folder)], env=env, check=True)
    return folder / minilm.MODEL_FILE


def write_sets(folder: Path, samples: int, seq: int) -> tuple[Path, Path]:
    """Calibration and held-out eval sets of ``samples`` tokenized sentences each."""
    calib, held_out = folder / f"calib-{samples}.npz", folder / f"eval-{samples}.npz"
    np.savez(calib, **minilm.tokenize(minilm.sentences(samples, seed=2), seq))
    np.savez(held_out, **minilm.tokenize(minilm.sentences(samples, seed=1), seq))
    return calib, held_out


def run_once(
    code: Path, model: Path, calib: Path, held_out: Path, samples: int, work: Path
) -> dict[str, Any]:
    spec = work / f"spec-{samples}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "minilm-memory",
                "source": {"uri": str(model), "format": "onnx"},
                "optimization": {
                    "target": {"device": "cpu"},
                    "quantization": {
                        "precision": "int8",
                        "method": "static",
                        "calibration": {"uri": str(calib), "samples": samples},
                    },
                    "accuracy": {"dataset": str(held_out), "metric": "cosine", "maxDrop": 0.05},
                    "benchmark": {"batchSizes": [1, 32], "iterations": 3, "warmup": 1, "rounds": 3},
                },
            }
        )
    )
    out = work / f"out-{samples}"
    env = {
        **os.environ,
        "PYTHONPATH": f"{code / 'src'}:{code / 'optimizer'}",
        "OPTISERVE_TERMINATION_LOG": str(work / f"termination-{samples}"),
    }
    started = time.perf_counter()
    with (work / f"log-{samples}.txt").open("w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "optiserve_optimizer.main", str(spec), "--out", str(out)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    reports = list(out.glob("*/report.json"))
    report: dict[str, Any] = json.loads(reports[0].read_text()) if reports else {}
    return {
        "code": child.returncode,
        "wall": wall,
        "report_peak": report.get("memory", {}).get("peakRssBytes", 0) / MIB,
        "maxrss": usage.ru_maxrss * 1024 / MIB,  # KiB on Linux
        "log": work / f"log-{samples}.txt",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,2048", help="samples per dataset, comma-separated")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sample")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose optimizer runs")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.keep or Path(tempfile.mkdtemp(prefix="optiserve-membench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = make_model(work / "model")
    print(machine())
    print(f"code: {args.label} ({args.code}); seq {args.seq}; load average before: {load()}")
    print()
    print("| samples | calib+eval .npz MiB | report peak RSS MiB | ru_maxrss MiB | wall s | exit |")
    print("|---|---|---|---|---|---|")
    for samples in sizes:
        calib, held_out = write_sets(work, samples, args.seq)
        on_disk = (calib.stat().st_size + held_out.stat().st_size) / MIB
        r = run_once(args.code, model, calib, held_out, samples, work)
        print(
            f"| {samples} | {on_disk:.1f} | {r['report_peak']:.0f} | "
            f"{r['maxrss']:.0f} | {r['wall']:.0f} | {r['code']} |",
            flush=True,
        )
        if r["code"] != 0:
            print(f"  run failed, log: {r['log']}")
    print()
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()

"""The child process of ``footprint``: loads one model in a fresh runtime and runs it.

``python -m optiserve_optimizer.footprint_child MODEL FEED.npz THREADS DEVICE`` prints one
JSON line: peak RSS after importing the runtime (nothing loaded yet), peak RSS at the end,
CPU seconds per inference over the timed batches. Imports nothing of optiserve before the
runtime baseline is read, and only numpy and the runtime for an ONNX model, so that the
numbers are the runtime's and the model's, not the optimizer's.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIN_BATCHES = 3
MAX_BATCHES = 2000  # a tiny model: enough batches for the CPU time to count
MIN_CPU_SECONDS = 0.5  # enough timed work for process_time's resolution to disappear


def _peak_rss_bytes() -> int:
    """This process's peak RSS since its exec: VmHWM of /proc/self/status.

    Not ``getrusage``'s ru_maxrss: Linux keeps that across fork and exec, so a child of a
    parent that had imported torch starts with the parent's peak and reports it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: KiB


def _onnx(model: Path, threads: int, device: str) -> tuple[str, Callable[[Any], Any], int]:
    import onnxruntime as ort

    baseline = _peak_rss_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    sess = ort.InferenceSession(str(model), options, providers=providers)
    names = [i.name for i in sess.get_inputs()]
    return (
        f"onnxruntime {ort.__version__}",
        lambda feed: sess.run(None, {n: feed[n] for n in names}),
        baseline,
    )


def _tensorrt(model: Path) -> tuple[str, Callable[[Any], Any], int]:
    import tensorrt

    from optiserve_optimizer.passes.tensorrt_build import tensorrt_runner

    baseline = _peak_rss_bytes()
    return f"tensorrt {tensorrt.__version__}", tensorrt_runner(model), baseline


def main(argv: list[str]) -> int:
    model, feed_file, threads, device = Path(argv[0]), Path(argv[1]), int(argv[2]), argv[3]
    import numpy as np

    with np.load(feed_file) as data:
        feed = {k: data[k] for k in data.files}
    if model.suffix == ".plan":
        runtime, run, baseline = _tensorrt(model)
    else:
        runtime, run, baseline = _onnx(model, threads, device)
    batch = len(next(iter(feed.values())))
    run(feed)  # the first call allocates the arena and picks kernels: counted in the peak
    batches, start = 0, time.process_time()
    while batches < MAX_BATCHES and (
        batches < MIN_BATCHES or time.process_time() - start < MIN_CPU_SECONDS
    ):
        run(feed)
        batches += 1
    cpu = time.process_time() - start
    print(
        json.dumps(
            {
                "runtime": runtime,
                "runtimeRssBytes": baseline,
                "peakRssBytes": _peak_rss_bytes(),
                "cpuSecondsPerInference": cpu / (batches * batch),
                "batch": batch,
                "threads": threads,
                "batches": batches,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What the canary e2e (test_canary_e2e.py) needs besides the test: a watch on the stable's
pods, and the bad models swapped into real optimizer artifacts once they are written."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from kubernetes import client

from optiserve.render.deployment import selector_string
from optiserve_testing.cluster import LocalCluster
from tests.triton.tiny_models import lookup_fails_off_zero


class StableWatch:
    """Polls the stable Deployment's pods (its selector, less the canary's) every half
    second: the names seen, and every sample at which one of them was not Ready or had
    restarted since the first sample."""

    def __init__(self, cluster: LocalCluster, ns: str, name: str) -> None:
        self.core = client.CoreV1Api(cluster.api_client())
        self.ns = ns
        self.selector = f"{selector_string(name)},optiserve.io/revision!=canary"
        self.samples = 0
        self.names: set[str] = set()
        self.lapses: list[str] = []
        self._restarts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                pods = self.core.list_namespaced_pod(self.ns, label_selector=self.selector).items
            except Exception:  # an API hiccup is no observation: the next sample counts
                continue
            self.samples += 1
            if not pods:
                self.lapses.append("no stable pod")
            for pod in pods:
                name = str(pod.metadata.name if pod.metadata else "")
                self.names.add(name)
                status = pod.status or client.V1PodStatus()
                if not any(
                    c.type == "Ready" and c.status == "True" for c in status.conditions or []
                ):
                    self.lapses.append(f"{name} not Ready")
                restarts = sum(int(c.restart_count) for c in status.container_statuses or [])
                if restarts != self._restarts.setdefault(name, restarts):
                    self.lapses.append(f"{name} restarted")

    def __enter__(self) -> StableWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


SLOW_LAYERS, SLOW_WIDTH = 80, 2048


def slow_model(path: Path) -> None:
    """The tiny classifier's inputs and outputs (x: [N, 8] -> y: [N, 4]), answering correctly
    shaped probabilities, but through 80 extra 2048x2048 matrix products whose result is
    multiplied by zero: a model that loads and answers, only far slower than the stable."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "widen"], ["h0"])]
    for layer in range(SLOW_LAYERS):
        nodes.append(helper.make_node("MatMul", [f"h{layer}", "square"], [f"h{layer + 1}"]))
    nodes += [
        helper.make_node("MatMul", [f"h{SLOW_LAYERS}", "narrow"], ["slow"]),
        helper.make_node("Mul", ["slow", "zero"], ["nothing"]),
        helper.make_node("MatMul", ["x", "classify"], ["logits"]),
        helper.make_node("Add", ["logits", "nothing"], ["summed"]),
        helper.make_node("Softmax", ["summed"], ["y"], axis=-1),
    ]
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            numpy_helper.from_array(np.full((8, SLOW_WIDTH), 1e-3, np.float32), "widen"),
            numpy_helper.from_array(np.full((SLOW_WIDTH, SLOW_WIDTH), 1e-4, np.float32), "square"),
            numpy_helper.from_array(np.full((SLOW_WIDTH, 4), 1e-3, np.float32), "narrow"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "classify"),
        ],
    )
    slow = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    slow.ir_version = 8
    onnx.save(slow, str(path))


def failing_model(path: Path) -> None:
    """The tiny classifier's inputs and outputs, but every input other than zeros fails in
    onnxruntime (an input-driven Gather out of its table): Ready, then errors."""
    lookup_fails_off_zero(path, features=8, classes=4)


def swap_when_written(folder: Path, stop: threading.Event, write: Callable[[Path], None]) -> None:
    while not stop.wait(0.05):
        models = list(folder.glob("*/1/model.onnx"))
        if models:
            for path in models:
                write(path)
            return

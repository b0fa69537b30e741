"""A real Prometheus that scrapes the local cluster's pods the way a cluster's does.

It keeps the pods annotated ``prometheus.io/scrape: "true"`` and scrapes ``prometheus.io/port``
and ``prometheus.io/path`` at the pod's IP: the relabeling of the annotation-based pod job of the
prometheus-community Helm chart, which is what the annotations on optiserve's Triton pods are
for. Every series gets ``namespace`` and ``pod`` labels, the labels prometheus-adapter's rules
map to Kubernetes objects.

Debian builds Prometheus without Kubernetes service discovery, so ``PodDiscovery`` does that
part: it lists the pods from the API server every second and writes them, with the same
``__meta_kubernetes_pod_*`` labels Kubernetes discovery attaches, to a file that Prometheus
watches (``file_sd_configs``). The relabeling that follows is the chart's, unchanged.

The binary comes from ``$OPTISERVE_PROMETHEUS`` or ``prometheus`` on PATH (Debian's package;
.ci/run installs it). It scrapes every second so tests and benchmarks see load within seconds;
a cluster would scrape every 15-30 s, which adds to the scaling delay, not to its logic.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from optiserve.serve.probe import http_ok, poll_until
from optiserve_testing.processes import ManagedProcess, free_ports

PROMETHEUS_ENV = "OPTISERVE_PROMETHEUS"
SCRAPE_INTERVAL = "1s"


def scrape(metrics_url: str, model: str) -> dict[str, float]:
    """A server's Prometheus text (Triton's /metrics): every sample of ``model``, and the
    samples that name no model (GPU, CPU), summed over their label sets by series name. The
    one reading of metrics text the tests and benchmarks share."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser names counter samples "<name>_total"; Triton's series have no suffix.
            name = sample.name
            if family.type == "counter":
                name = name.removesuffix("_total")
            if sample.labels.get("model", model) == model:
                totals[name] = totals.get(name, 0.0) + sample.value
    return totals


class PrometheusUnavailable(RuntimeError):
    """No prometheus binary on this machine."""


def find_prometheus() -> Path:
    found = os.environ.get(PROMETHEUS_ENV) or shutil.which("prometheus")
    if not found:
        raise PrometheusUnavailable(
            f"no prometheus binary: install Debian's prometheus package or set {PROMETHEUS_ENV}"
        )
    return Path(found)


def pod_scrape_config(targets_file: Path) -> dict[str, Any]:
    """prometheus.yml with the annotation-based pod job over the pods ``PodDiscovery`` writes."""
    meta = "__meta_kubernetes_pod_"
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "5s"}],
                "relabel_configs": [
                    {
                        "source_labels": [f"{meta}annotation_prometheus_io_scrape"],
                        "action": "keep",
                        "regex": "true",
                    },
                    {
                        "source_labels": [f"{meta}phase"],
                        "action": "drop",
                        "regex": "Pending|Succeeded|Failed|Completed",
                    },
                    {
                        "source_labels": [f"{meta}annotation_prometheus_io_path"],
                        "action": "replace",
                        "target_label": "__metrics_path__",
                        "regex": "(.+)",
                    },
                    {
                        "source_labels": ["__address__", f"{meta}annotation_prometheus_io_port"],
                        "action": "replace",
                        "regex": r"([^:]+)(?::\d+)?;(\d+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    {"action": "labelmap", "regex": f"{meta}label_(.+)"},
                    {
                        "source_labels": ["__meta_kubernetes_namespace"],
                        "action": "replace",
                        "target_label": "namespace",
                    },
                    {
                        "source_labels": [f"{meta}name"],
                        "action": "replace",
                        "target_label": "pod",
                    },
                ],
            }
        ],
    }


def _label_name(key: str) -> str:
    # Kubernetes discovery's sanitizing of label and annotation keys.
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def pod_target_groups(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd target groups for pods, labelled as Kubernetes pod discovery labels them."""
    groups = []
    for pod in pods:
        metadata, status = pod["metadata"], pod.get("status") or {}
        if not status.get("podIP"):
            continue
        labels = {
            "__meta_kubernetes_namespace": metadata["namespace"],
            "__meta_kubernetes_pod_name": metadata["name"],
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_ip": status["podIP"],
        }
        for kind in ("label", "annotation"):
            for key, value in (metadata.get(f"{kind}s") or {}).items():
                labels[f"__meta_kubernetes_pod_{kind}_{_label_name(key)}"] = value
        groups.append({"targets": [status["podIP"]], "labels": labels})
    return groups


class PodDiscovery:
    """Writes every pod of the cluster to ``path`` each second (a temp file, then a rename)."""

    def __init__(self, api_client: client.ApiClient, path: Path):
        self.core = client.CoreV1Api(api_client)
        self.api_client = api_client
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pod-discovery")

    def __enter__(self) -> PodDiscovery:
        self.write_once()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def write_once(self) -> None:
        pods = self.api_client.sanitize_for_serialization(  # type: ignore[no-untyped-call]
            self.core.list_pod_for_all_namespaces().items
        )
        text = json.dumps(pod_target_groups(pods), sort_keys=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(text)
        partial.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):
                self.write_once()


class LocalPrometheus:
    """``with LocalPrometheus(config, state_dir) as prom: prom.query("up")``."""

    def __init__(self, config: dict[str, Any], state_dir: Path, binary: Path | None = None):
        self.config = config
        self.state_dir = state_dir
        self.binary = binary or find_prometheus()
        self.url = ""
        self._process: ManagedProcess | None = None

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.state_dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        (port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{port}"
        self._process = ManagedProcess(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.state_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            self.state_dir / "prometheus.log",
        )
        process = self._process
        ready = poll_until(
            lambda: process.exited() or http_ok(f"{self.url}/-/ready"), timeout_s, 0.25
        )
        if not ready or process.exited():
            tail = process.log_tail()
            self.stop()
            raise RuntimeError(f"prometheus did not become ready; its log ends with:\n{tail}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as response:
            active: list[dict[str, Any]] = json.load(response)["data"]["activeTargets"]
        return active

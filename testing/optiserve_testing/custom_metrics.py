"""A test-only custom metrics API server answering from Prometheus by optiserve's adapter rules.

In a cluster prometheus-adapter serves ``custom.metrics.k8s.io``: the API server's aggregator
proxies the HPA controller's requests to it (an ``APIService`` names its Service), and it turns
each request into PromQL with its rules. prometheus-adapter cannot be built here (the Go module
proxy refuses ``sigs.k8s.io/prometheus-adapter``), so this server does the adapter's part for
the rules optiserve ships (:func:`optiserve.render.prometheus_adapter.adapter_rules`): it lists
the pods the request selects, fills the rule's ``metricsQuery`` template (``<<.LabelMatchers>>``
= ``namespace="ns",pod=~"a|b"``, ``<<.GroupBy>>`` = ``pod``) and answers a ``MetricValueList``.
Everything around it is real: the APIService registration, the aggregator's TLS (serving
certificate checked against the APIService's caBundle as ``<service>.<namespace>.svc``), the
HPA controller in kube-controller-manager, Prometheus and the Triton servers it scrapes.

It does not authorize requests (prometheus-adapter delegates that to the API server); it only
serves discovery and pod metrics, which is all the HPA asks for.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client

from optiserve.render.prometheus_adapter import adapter_rules
from optiserve_testing import pki
from optiserve_testing.processes import free_ports

GROUP = "custom.metrics.k8s.io"
VERSION = "v1beta2"
NAMESPACE = "custom-metrics"
SERVICE = "custom-metrics-apiserver"
_POD_METRIC = re.compile(rf"^/apis/{GROUP}/{VERSION}/namespaces/([^/]+)/pods/([^/]+)/([^/]+)$")

Query = Callable[[str], list[dict[str, Any]]]  # PromQL -> Prometheus' result vector


class NoRoutableAddress(RuntimeError):
    """The machine has only loopback, which an Endpoints object may not name."""


def routable_ipv4() -> str:
    """This machine's non-loopback IPv4 address (the API server refuses loopback endpoints)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; this only picks a route
            address = str(probe.getsockname()[0])
        except OSError as err:
            raise NoRoutableAddress(f"no route off loopback: {err}") from err
    if address.startswith("127."):
        raise NoRoutableAddress("only a loopback address; Endpoints may not use 127.0.0.0/8")
    return address


def pod_metric_query(rule: dict[str, Any], namespace: str, pods: Sequence[str]) -> str:
    """The rule's metricsQuery for ``pods`` of ``namespace``, as prometheus-adapter fills it."""
    # Pod names are DNS subdomains: nothing in them but "." means anything to a regexp, and a
    # "." can only match itself among other valid names; prometheus-adapter joins them as is.
    names = "|".join(pods)
    matchers = f'namespace="{namespace}",pod=~"{names}"'
    query: str = rule["metricsQuery"]
    return query.replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")


def quantity(value: float) -> str:
    """A Kubernetes quantity in thousandths, the precision the adapter answers with."""
    return f"{round(value * 1000)}m"


class CustomMetricsAPI:
    """``with CustomMetricsAPI(prometheus.query, core_api, certs) as api: api.url``."""

    def __init__(self, query: Query, core: client.CoreV1Api, pki_dir: Path, ca: pki.KeyPair):
        self.query = query
        self.core = core
        self.host = routable_ipv4()
        self.port = free_ports(1)[0]
        self.rules = {rule["name"]["as"]: rule for rule in adapter_rules()}
        self.requests: list[str] = []  # paths asked for, so tests can see the HPA's requests
        self.cert = pki.make_certificate(
            ca,
            pki_dir,
            "custom-metrics-apiserver",
            SERVICE,
            ip_sans=(self.host,),
            dns_sans=(f"{SERVICE}.{NAMESPACE}.svc",),
            server=True,
        )
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> CustomMetricsAPI:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = api.handle(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert.cert), str(self.cert.key))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="custom-metrics").start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- requests ----------------------------------------------------------------------------
    def handle(self, raw_path: str) -> tuple[int, dict[str, Any]]:
        path, _, query_string = raw_path.partition("?")
        self.requests.append(raw_path)
        if path.rstrip("/") == f"/apis/{GROUP}/{VERSION}":
            return 200, self.discovery()
        match = _POD_METRIC.match(path)
        if match is None:
            return 404, _status(404, f"{path} is not served here")
        # Clients send the "*" of "all pods" percent-encoded, as %2A.
        namespace, name, metric = (urllib.parse.unquote(part) for part in match.groups())
        rule = self.rules.get(metric)
        if rule is None:
            return 404, _status(404, f"no rule makes metric {metric!r}")
        params = urllib.parse.parse_qs(query_string)
        selector = params.get("labelSelector", [""])[0]
        return 200, self.pod_metrics(rule, metric, namespace, name, selector)

    def discovery(self) -> dict[str, Any]:
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{GROUP}/{VERSION}",
            "resources": [
                {
                    "name": f"pods/{metric}",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "MetricValueList",
                    "verbs": ["get"],
                }
                for metric in sorted(self.rules)
            ],
        }

    def pod_metrics(
        self, rule: dict[str, Any], metric: str, namespace: str, name: str, selector: str
    ) -> dict[str, Any]:
        if name == "*":
            listed = self.core.list_namespaced_pod(namespace, label_selector=selector or None)
            pods = [str(pod.metadata.name) for pod in listed.items if pod.metadata]
        else:
            pods = [name]
        values: dict[str, float] = {}
        if pods:
            for sample in self.query(pod_metric_query(rule, namespace, pods)):
                values[sample["metric"]["pod"]] = float(sample["value"][1])
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "kind": "MetricValueList",
            "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {},
            "items": [
                {
                    "describedObject": {
                        "kind": "Pod",
                        "namespace": namespace,
                        "name": pod,
                        "apiVersion": "/v1",
                    },
                    "metric": {"name": metric},
                    "timestamp": now,
                    "windowSeconds": 60,
                    "value": quantity(value),
                }
                for pod, value in sorted(values.items())
            ],
        }

    # ---- registration ------------------------------------------------------------------------
    def api_service_manifests(self, ca_bundle: bytes) -> list[dict[str, Any]]:
        """Namespace, selector-less Service + Endpoints pointing here, and the APIService."""
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": SERVICE, "namespace": NAMESPACE},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": self.port}]},
            },
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": SERVICE, "namespace": NAMESPACE},
                "subsets": [
                    {
                        "addresses": [{"ip": self.host}],
                        "ports": [{"name": "https", "port": self.port}],
                    }
                ],
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": f"{VERSION}.{GROUP}"},
                "spec": {
                    "group": GROUP,
                    "version": VERSION,
                    "service": {"name": SERVICE, "namespace": NAMESPACE, "port": 443},
                    "caBundle": base64.b64encode(ca_bundle).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 200,
                },
            },
        ]


def _status(code: int, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "code": code,
    }

"""The routed cluster (``routed_cluster``): pod addresses on lo, EndpointSlices, kube-proxy.

Three pods of a Deployment run a small HTTP server each (the pod runner, bound to the pod's
address) that answers with its pod's name. The EndpointSlice controller publishes their
addresses, kube-proxy routes the Service's ClusterIP to them, a deleted pod's address leaves
lo and its endpoint the Service. The address allocation itself is checked without a cluster.
"""

from __future__ import annotations

import collections
import http.client
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from optiserve_testing.cluster import LocalCluster
from optiserve_testing.pod_network import (
    ADDRESS_LABEL,
    DEFAULT_LO_POD_CIDR,
    candidate_addresses,
)
from optiserve_testing.waiting import wait_until

NAMESPACE = "local-pods"  # kwok_config.RUN_LOCALLY_NAMESPACES: the pod runner runs its pods
APP = "echo"
REPLICAS = 3
# Answers GET with the pod's name, on the pod's own address (OPTISERVE_POD_IP).
SERVER = """
import http.server, os
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["POD_NAME"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((os.environ["OPTISERVE_POD_IP"], 8080), Echo).serve_forever()
"""


def manifests() -> list[dict[str, Any]]:
    labels = {"app": APP}
    container = {
        "name": "server",
        "image": "python",
        "command": ["python", "-c", SERVER],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": APP},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": APP},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    ]


def test_candidate_addresses_cover_the_range_from_the_uid() -> None:
    first = list(candidate_addresses("uid-1", "10.250.0.0/29"))
    assert sorted(first) == [f"10.250.0.{i}" for i in range(1, 7)]  # no network or broadcast
    assert first == list(candidate_addresses("uid-1", "10.250.0.0/29"))
    starts = {next(candidate_addresses(f"uid-{i}", DEFAULT_LO_POD_CIDR)) for i in range(200)}
    assert len(starts) > 190  # spread over the range, not clustered at its start


def test_without_net_admin_the_cluster_says_what_is_missing() -> None:
    """No CAP_NET_ADMIN (dropped from the bounding set when root): a clear error, not a hang."""
    script = (
        "from optiserve_testing.pod_network import AddressesOnLo, PodNetworkUnavailable\n"
        "try:\n"
        "    AddressesOnLo().preflight()\n"
        "except PodNetworkUnavailable as err:\n"
        "    raise SystemExit(str(err))\n"
    )
    drop = ["setpriv", "--bounding-set=-net_admin"] if os.geteuid() == 0 else []
    run = subprocess.run(
        [*drop, sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1, run
    assert "Operation not permitted" in run.stderr and "CAP_NET_ADMIN" in run.stderr, run.stderr


@pytest.fixture
def echo(routed_cluster: LocalCluster) -> Iterator[LocalCluster]:
    routed_cluster.kubectl("create", "namespace", NAMESPACE, check=True)
    routed_cluster.wait_for_default_service_account(NAMESPACE)
    routed_cluster.apply(manifests(), namespace=NAMESPACE)
    yield routed_cluster
    routed_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


def get(cluster: LocalCluster, *what: str) -> Any:
    found = cluster.kubectl("get", "-n", NAMESPACE, *what, "-o", "json", check=True)
    return json.loads(found.stdout)


def ready_addresses(cluster: LocalCluster) -> dict[str, str]:
    """pod name -> address, of the ready endpoints in the Service's EndpointSlices."""
    slices = get(cluster, "endpointslices", "-l", f"kubernetes.io/service-name={APP}")
    return {
        e["targetRef"]["name"]: e["addresses"][0]
        for s in slices["items"]
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready") and "targetRef" in e
    }


def on_lo() -> set[str]:
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", "lo", "label", ADDRESS_LABEL],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[3].split("/")[0] for line in shown.splitlines()}


def get_name(address: str, port: int) -> str:
    """The name of the pod that answered, on a connection of its own; "" when none did."""
    connection = http.client.HTTPConnection(address, port, timeout=10)
    try:
        connection.request("GET", "/", headers={"Connection": "close"})
        return connection.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return ""
    finally:
        connection.close()


def routing_state(cluster: LocalCluster, cluster_ip: str, answers: Mapping[str, int]) -> str:
    """What a failed routing check shows: who answered, kube-proxy's rules for the address and
    the end of its log."""
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=False)
    mentions = [line.strip() for line in rules.stdout.splitlines() if cluster_ip in line]
    log = cluster.logs_dir / "kube-proxy.log"
    tail = log.read_text(errors="replace")[-3000:] if log.is_file() else "(no kube-proxy log)"
    return f"answers {dict(answers)}; nft rules naming {cluster_ip}: {mentions}; log:\n{tail}"


@pytest.mark.cluster
def test_slices_list_pod_addresses_and_kube_proxy_routes_the_cluster_ip(echo: LocalCluster) -> None:
    wait_until("3 ready endpoints", lambda: len(ready_addresses(echo)) == REPLICAS, 120)
    endpoints = ready_addresses(echo)
    pods = get(echo, "pods")["items"]
    assert endpoints == {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
    assert set(endpoints.values()) <= on_lo()
    for name, address in endpoints.items():
        assert ipaddress.ip_address(address) in ipaddress.ip_network(DEFAULT_LO_POD_CIDR)
        assert get_name(address, 8080) == name  # each pod serves on its own address

    cluster_ip = str(get(echo, "service", APP)["spec"]["clusterIP"])
    answers: collections.Counter[str] = collections.Counter()

    def every_pod_answers() -> bool:
        for _ in range(30):
            answers[get_name(cluster_ip, 80)] += 1
        # "" counts refused connections: until kube-proxy has written the Service's rules.
        return set(answers) - {""} == set(endpoints)

    try:
        wait_until("the ClusterIP reaching every pod", every_pod_answers, 60)
    except AssertionError as error:
        raise AssertionError(f"{error}: {routing_state(echo, cluster_ip, answers)}") from None
    assert set(answers) - {""} == set(endpoints), answers

    # A deleted pod: its address leaves lo, its endpoint the slices, kube-proxy its rules.
    gone = sorted(endpoints)[0]
    echo.kubectl("delete", "pod", gone, "-n", NAMESPACE, "--wait=false", check=True)
    wait_until("the deleted pod's address off lo", lambda: endpoints[gone] not in on_lo(), 60)
    wait_until("its endpoint out of the slices", lambda: gone not in ready_addresses(echo), 60)
    wait_until(
        "kube-proxy no longer routing to it",
        lambda: all(get_name(cluster_ip, 80) not in ("", gone) for _ in range(30)),
        60,
    )

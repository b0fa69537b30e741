"""A real, local Kubernetes control plane for the tests (no Docker needed).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run from the binaries that
hack/cluster/build.sh builds; kwok plays the kubelets of a few fake nodes (two GPU nodes and a CPU
node), and the local pod runner (pod_runner.py) really runs the pods of Jobs as local processes.
Everything listens on random loopback ports and keeps its state in one temporary directory.
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from optiserve.crd import crd_yaml
from optiserve.serve.probe import http_ok, poll_until
from optiserve.uri import parse_uri
from optiserve_testing import pki
from optiserve_testing.binaries import Binaries
from optiserve_testing.cluster_spec import (
    KWOK_NODE_ANNOTATION,
    ClusterOptions,
    render_kubeconfig,
)
from optiserve_testing.kube_proxy import USER as KUBE_PROXY_USER
from optiserve_testing.kube_proxy import KubeProxy
from optiserve_testing.kwok_config import render_kwok_config
from optiserve_testing.pod_network import AddressesOnLo
from optiserve_testing.processes import ManagedProcess, free_ports
from optiserve_testing.waiting import wait_until

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from optiserve_testing.pod_runner import PodRunner

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
FRONT_PROXY_USER = "front-proxy-client"


class ClusterStartError(RuntimeError):
    """A control-plane component failed to start or to become ready in time."""


class LocalCluster:
    """Start with `start()` (or `with LocalCluster(...)`), stop with `stop()`; stop is idempotent
    and also registered with atexit, so a failing test run leaves no process behind."""

    def __init__(
        self,
        binaries: Binaries,
        options: ClusterOptions | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.binaries = binaries
        self.options = options or ClusterOptions()
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="optiserve-cluster-"))
        self.pki_dir = self.state_dir / "pki"
        self.logs_dir = self.state_dir / "logs"
        # Each PersistentVolumeClaim becomes the folder <pvc_root>/<namespace>/<claim name>.
        self.pvc_root = self.state_dir / "volumes"
        self.kubeconfig = self.state_dir / "admin.kubeconfig"
        self.restricted_kubeconfig = self.state_dir / "restricted.kubeconfig"
        self.server = ""
        self.etcd_url = ""
        self._processes: list[ManagedProcess] = []
        self._pod_runner: PodRunner | None = None
        self._kube_proxy: KubeProxy | None = None
        # Opt-in (ClusterOptions.pod_cidr_on_lo): pods get addresses of their own on lo.
        cidr = self.options.pod_cidr_on_lo
        self.pod_addresses = AddressesOnLo(cidr) if cidr else None
        self._started = False

    def process_ids(self) -> dict[str, int]:
        """The control plane's processes by name (etcd, kube-apiserver, ...): for measuring."""
        return {process.name: process.pid for process in self._processes}

    # ---- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        atexit.register(self.stop)
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop(keep_state=True)
            raise

    def stop(self, keep_state: bool | None = None) -> None:
        if not self._started:
            return
        self._started = False
        self.stop_pod_runner()
        if self._kube_proxy is not None:
            self._kube_proxy.stop()
            self._kube_proxy = None
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        atexit.unregister(self.stop)
        if not (self.options.keep_state if keep_state is None else keep_state):
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _start(self) -> None:
        if self.options.kube_proxy and self.pod_addresses is None:
            raise ValueError("ClusterOptions.kube_proxy needs pod_cidr_on_lo")
        if self.pod_addresses is not None:
            self.pod_addresses.preflight()  # fail before anything starts when it cannot work
        etcd_port, peer_port, api_port, cm_port, sched_port, kwok_port = free_ports(6)
        self.server = f"https://127.0.0.1:{api_port}"
        certs = self._make_pki()
        etcd_url = self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", self._etcd_args(etcd_url, f"http://127.0.0.1:{peer_port}"))
        self._wait_for("etcd", lambda: http_ok(f"{etcd_url}/health"))
        self._spawn("kube-apiserver", self._apiserver_args(api_port, etcd_url, certs))
        self._wait_for("kube-apiserver", lambda: self._readyz_ok(certs["admin"]))
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self._write_kubeconfig('controller-manager', certs)}",
                "--controllers=*",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={certs['sa'].key}",
                f"--root-ca-file={certs['ca'].cert}",
                f"--cluster-signing-cert-file={certs['ca'].cert}",
                f"--cluster-signing-key-file={certs['ca'].key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                f"--cert-dir={self.state_dir / 'controller-manager-certs'}",
                *self.options.controller_manager_args,
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self._write_kubeconfig('scheduler', certs)}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={self.state_dir / 'scheduler-certs'}",
            ],
        )
        self.restricted_kubeconfig.write_text(
            render_kubeconfig(
                self.server, certs["ca"].cert, self.options.restricted_user, certs["restricted"]
            )
        )
        self._grant_restricted_user()
        kwok_config = self.state_dir / "kwok.yaml"
        kwok_config.write_text(render_kwok_config(self.binaries.kwok_stages))
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={kwok_config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--server-address=127.0.0.1:{kwok_port}",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                # Keep the nodes' Leases renewed: the heartbeat stage rewrites node status only
                # every ~10 min, so without leases the node controller marks every node (and
                # its pods) NotReady for a moment about once a minute.
                "--node-lease-duration-seconds=40",
            ],
        )
        self.apply([node.manifest() for node in self.options.nodes])
        names = [f"node/{node.name}" for node in self.options.nodes]
        self._wait_for(
            "kwok",
            lambda: self._kubectl_ok("wait", "--for=condition=Ready", *names, "--timeout=5s"),
        )
        self.wait_for_default_service_account("default")
        if self.options.kube_proxy and self.options.pod_cidr_on_lo:
            self._kube_proxy = KubeProxy(
                self.binaries.path("kube-proxy"),
                self._write_kubeconfig("kube-proxy", certs),
                self.options.pod_cidr_on_lo,
                self.logs_dir / "kube-proxy.log",
            )
            self._kube_proxy.start(self.options.startup_timeout_s)

    def _make_pki(self) -> dict[str, pki.KeyPair]:
        ca = pki.make_ca(self.pki_dir)

        def client(name: str, user: str, *groups: str) -> pki.KeyPair:
            return pki.make_certificate(ca, self.pki_dir, name, user, groups)

        certs = {
            "ca": ca,
            "sa": pki.make_service_account_keys(self.pki_dir),
            "apiserver": pki.make_certificate(
                ca,
                self.pki_dir,
                "apiserver",
                "kube-apiserver",
                ip_sans=("127.0.0.1", SERVICE_IP),
                dns_sans=(
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ),
                server=True,
            ),
            "admin": client("admin", "optiserve-admin", "system:masters"),
            "controller-manager": client("controller-manager", "system:kube-controller-manager"),
            "scheduler": client("scheduler", "system:kube-scheduler"),
            "restricted": client("restricted", self.options.restricted_user),
            # The aggregator's identity towards extension API servers (APIService backends).
            "front-proxy": client("front-proxy", FRONT_PROXY_USER),
        }
        if self.options.kube_proxy:
            certs["kube-proxy"] = client("kube-proxy", KUBE_PROXY_USER)
        self.kubeconfig.write_text(
            render_kubeconfig(self.server, ca.cert, "optiserve-admin", certs["admin"])
        )
        return certs

    def _write_kubeconfig(self, name: str, certs: dict[str, pki.KeyPair]) -> Path:
        path = self.state_dir / f"{name}.kubeconfig"
        path.write_text(render_kubeconfig(self.server, certs["ca"].cert, name, certs[name]))
        return path

    def _etcd_args(self, client_url: str, peer_url: str) -> list[str]:
        return [
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Test data is thrown away, so skipping fsync costs nothing and saves a lot of time.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_args(self, port: int, etcd_url: str, certs: dict[str, pki.KeyPair]) -> list[str]:
        return [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={certs['apiserver'].cert}",
            f"--tls-private-key-file={certs['apiserver'].key}",
            f"--client-ca-file={certs['ca'].cert}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs['sa'].cert}",
            f"--service-account-signing-key-file={certs['sa'].key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            # API aggregation (custom.metrics.k8s.io for the HPA): there is no kube-proxy to
            # turn a Service IP into a backend, so the aggregator dials an endpoint directly,
            # presenting the front-proxy certificate and the user in X-Remote-* headers.
            "--enable-aggregator-routing=true",
            f"--requestheader-client-ca-file={certs['ca'].cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_USER}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={certs['front-proxy'].cert}",
            f"--proxy-client-key-file={certs['front-proxy'].key}",
            *self.options.apiserver_args,
        ]

    def _spawn(self, name: str, args: list[str]) -> None:
        self._processes.append(
            ManagedProcess(
                name, [str(self.binaries.path(name)), *args], self.logs_dir / f"{name}.log"
            )
        )

    def _wait_for(self, name: str, ready: Callable[[], bool]) -> None:
        def up() -> bool:
            dead = [p for p in self._processes if p.exited()]
            if dead:
                raise ClusterStartError(
                    f"{dead[0].name} exited with {dead[0].popen.returncode} while waiting for "
                    f"{name}; its log {dead[0].log_path} ends with:\n{dead[0].log_tail()}"
                )
            return ready()

        if not poll_until(up, self.options.startup_timeout_s, 0.25):
            logs = "\n".join(f"--- {p.name}\n{p.log_tail(1500)}" for p in self._processes)
            raise ClusterStartError(
                f"{name} not ready after {self.options.startup_timeout_s}s; logs:\n{logs}"
            )

    def _readyz_ok(self, admin: pki.KeyPair) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        context.load_cert_chain(str(admin.cert), str(admin.key))
        return http_ok(f"{self.server}/readyz", context)

    def _grant_restricted_user(self) -> None:
        namespace = self.options.restricted_namespace
        self.apply(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "restricted-user-view", "namespace": namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "view",
                    },
                    "subjects": [
                        {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "User",
                            "name": self.options.restricted_user,
                        }
                    ],
                },
            ]
        )

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again with the same flags on the same etcd: every
        watch is closed, and the new API server's watch cache begins at etcd's revision now, so
        a watch resumed from an older resourceVersion is answered ``410 Gone``."""
        index = next(i for i, p in enumerate(self._processes) if p.name == "kube-apiserver")
        old = self._processes[index]
        argv = [str(arg) for arg in old.popen.args]  # type: ignore[union-attr]
        old.stop()
        self._processes[index] = ManagedProcess(old.name, argv, old.log_path)
        admin = pki.KeyPair(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        self._wait_for("kube-apiserver", lambda: self._readyz_ok(admin))

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (what kube-apiserver does every
        5 minutes): a watch or list from an older resourceVersion is answered 410 Gone by
        etcd too. Returns the revision, through etcd's JSON gateway (no etcdctl needed)."""
        import base64
        import json
        import urllib.request

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            request = urllib.request.Request(
                f"{self.etcd_url}{path}",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                found: dict[str, Any] = json.loads(response.read())
                return found

        key = base64.b64encode(b"/").decode()
        revision = int(post("/v3/kv/range", {"key": key, "limit": 1})["header"]["revision"])
        post("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    # ---- helpers for tests ---------------------------------------------------------------
    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = False,
        timeout_s: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (admin unless `kubeconfig` says otherwise)."""
        argv = [
            str(self.binaries.kubectl()),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            *args,
        ]
        return subprocess.run(
            argv, input=input, capture_output=True, text=True, check=check, timeout=timeout_s
        )

    def _kubectl_ok(self, *args: str) -> bool:
        return self.kubectl(*args, timeout_s=30).returncode == 0

    def apply(
        self, manifests: Sequence[Mapping[str, Any]] | str, namespace: str | None = None
    ) -> str:
        """`kubectl apply` manifests (dicts or YAML text); raises CalledProcessError on refusal."""
        text = (
            manifests
            if isinstance(manifests, str)
            else yaml.safe_dump_all([dict(m) for m in manifests])
        )
        args = ["apply", "-f", "-"] + ([f"--namespace={namespace}"] if namespace else [])
        return self.kubectl(*args, input=text, check=True).stdout

    def wait_for_default_service_account(self, namespace: str, timeout_s: float = 60.0) -> None:
        """Pods are refused until the service-account controller made `default` in a namespace."""
        made = poll_until(
            lambda: self._kubectl_ok("get", "serviceaccount", "default", "-n", namespace),
            timeout_s,
            0.25,
        )
        if not made:
            raise TimeoutError(f"no default service account in {namespace} after {timeout_s}s")

    def api_client(self, kubeconfig: Path | None = None) -> ApiClient:
        """A kubernetes Python client for this cluster (admin unless told otherwise)."""
        from kubernetes import config

        path = str(kubeconfig or self.kubeconfig)
        api: ApiClient = config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
        return api

    def claim_path(self, namespace: str, uri: str) -> Path:
        """The local folder behind a ``pvc://CLAIM/path`` URI in ``namespace``."""
        location = parse_uri(uri)
        if location.claim is None:
            raise ValueError(f"{uri!r} is not a pvc:// URI")
        return self.pvc_root / namespace / location.claim / location.path.strip("/")

    def certificate_authority(self) -> pki.KeyPair:
        """The CA behind every certificate here; it may sign more (e.g. an extension server's)."""
        return pki.KeyPair(self.pki_dir / "ca.crt", self.pki_dir / "ca.key")

    @property
    def pod_runner(self) -> PodRunner | None:
        return self._pod_runner

    def start_pod_runner(self) -> PodRunner:
        """Start (once) the runner that really runs Job pods here; see pod_runner.py."""
        from optiserve_testing.pod_runner import PodRunner

        if self._pod_runner is None:
            self._pod_runner = PodRunner(
                self.api_client(),
                self.state_dir / "pods",
                self.pvc_root,
                addresses=self.pod_addresses,
            )
            self._pod_runner.start()
        return self._pod_runner

    def stop_pod_runner(self) -> None:
        if self._pod_runner is not None:
            self._pod_runner.stop()
            self._pod_runner = None


def wait_established(cluster: LocalCluster, crd: str, timeout_s: float = 60.0) -> None:
    """Until the API server serves the CRD named ``crd``. Polled rather than `kubectl wait`,
    which fails at once ("accessor error") while a new CRD has no conditions yet."""

    def established() -> bool:
        found = cluster.kubectl(
            "get",
            "crd",
            crd,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Established")].status}',
        )
        return found.returncode == 0 and found.stdout.strip() == "True"

    wait_until(f"CRD {crd} Established", established, timeout_s=timeout_s, every_s=0.5)


def install_crd(cluster: LocalCluster) -> None:
    """Apply the generated CRD and wait until the API server serves it."""
    # Server-side: the CRD is too large for kubectl's last-applied-configuration annotation.
    cluster.kubectl("apply", "--server-side", "-f", "-", input=crd_yaml(), check=True)
    wait_established(cluster, "optimizedmodels.optiserve.io")

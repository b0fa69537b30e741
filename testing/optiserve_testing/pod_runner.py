"""Test-only stand-in for a kubelet: runs the pods that kwok leaves alone as local processes.

It owns a pod when `kwok_config.runner_owns_pod` says so: every Job pod (label
batch.kubernetes.io/job-name), any pod labelled optiserve.io/run-locally=true, and every pod in
the namespaces of kwok_config.RUN_LOCALLY_NAMESPACES. Once the
scheduler has put such a pod on a (fake) node, the runner starts its init containers one after
another and then its containers side by side, each as `command + args` with the container's env
and workingDir and its volumes mapped to local folders (see pod_spec.py), and reports phase
Running and then Succeeded or Failed with each container's exit code, reason and termination
message. Deleting the pod kills the processes (SIGTERM, then SIGKILL) and removes the pod.

Each pod has an address of its own (pod_network.py: a 127.x one, or one added to lo while it
runs). A pod whose containers have httpGet or tcpSocket readiness probes is reported Running but
not Ready until every probe answers 2xx or connects (polled every periodSeconds, after
initialDelaySeconds), and not Ready again after failureThreshold failures in a row, as a kubelet
does; other pods are Ready as soon as they run.

restartPolicy OnFailure is treated as Never: the pod fails and the Job controller retries with a
new pod. Under restartPolicy Always a container that exits is restarted in place after a backoff,
the pod staying Running and not Ready (CrashLoopBackOff), so a broken Deployment rollout stalls
as it does on a kubelet instead of churning pods. Output of each container goes to
`log_path(...)`; `kubectl logs` has no kubelet to ask.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from optiserve_testing import pod_spec
from optiserve_testing.image_pods import image_command
from optiserve_testing.images import REPO_ROOT, BuiltImage
from optiserve_testing.kwok_config import runner_owns_pod
from optiserve_testing.pod_network import LoopbackAddresses, PodAddresses, PodNetworkUnavailable
from optiserve_testing.processes import ManagedProcess
from optiserve_testing.volume_binder import VolumeBinder
from optiserve_testing.waiting import http_ok

LOG = logging.getLogger(__name__)
FALLBACK_LOG_BYTES = 2048


def probe_ok(url: str) -> bool:
    """A readiness probe passes: an http(s) URL answers 2xx, a ``tcp://`` port connects."""
    if not url.startswith("tcp://"):
        return http_ok(url)
    host, _, port = url.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


class PodRunner:
    def __init__(
        self,
        api_client: client.ApiClient,
        work_root: Path,
        pvc_root: Path,
        base_env: Mapping[str, str] | None = None,
        command_aliases: Mapping[str, tuple[str, ...]] = pod_spec.DEFAULT_COMMAND_ALIASES,
        kill_grace_s: float = 5.0,
        images: Mapping[str, BuiltImage] | None = None,
        addresses: PodAddresses | None = None,
        entrypoints: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.work_root = work_root
        self.pvc_root = pvc_root
        # Processes inherit the test run's environment (PATH, PYTHONPATH, ...) under the
        # container's own env, since they run this machine's tools, not an image's.
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.command_aliases = dict(command_aliases)
        self.kill_grace_s = kill_grace_s
        # reference -> built image: a container naming one runs inside it (image_pods.py).
        self.images = dict(images or {})
        # image reference -> the local argv of its ENTRYPOINT, for containers with no command
        # (e.g. the chart's operator pods: the image's `optiserve operator`).
        self.entrypoints = dict(entrypoints or {})
        self.volume_binder = VolumeBinder(api_client, pvc_root)
        self.addresses = addresses or LoopbackAddresses()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._claimed: set[str] = set()  # pod uids this runner started or is deleting
        self._deleting: set[str] = set()
        self._processes: dict[str, list[ManagedProcess]] = {}
        self._threads: list[threading.Thread] = []

    # ---- public ----------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        for target in (self._watch_pods, self.volume_binder.run):
            thread = threading.Thread(
                target=target, args=(self._stop,), daemon=True, name=f"pod-runner-{target.__name__}"
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            uids = list(self._processes)
        for uid in uids:
            self._kill(uid)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        self.addresses.release_all()

    def pod_dir(self, namespace: str, name: str) -> Path:
        return self.work_root / namespace / name

    def log_path(self, namespace: str, name: str, container: str) -> Path:
        return self.pod_dir(namespace, name) / f"{container}.log"

    def logs(self, namespace: str, name: str, container: str) -> str:
        with contextlib.suppress(OSError):
            return self.log_path(namespace, name, container).read_text(errors="replace")
        return ""

    # ---- watching --------------------------------------------------------------------------
    def _watch_pods(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                # A short server-side timeout relists often; handling is idempotent per uid.
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.core.list_pod_for_all_namespaces, timeout_seconds=5
                )
                for event in stream:
                    self._on_pod(event["type"], event["raw_object"])
                    if stop.is_set():
                        break
            except Exception:
                LOG.exception("pod runner watch failed; retrying")
                stop.wait(1)

    def _on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        if not runner_owns_pod(metadata.get("labels"), metadata.get("namespace", "")):
            return
        uid = metadata["uid"]
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            with self._lock:
                first = uid not in self._deleting
                self._deleting.add(uid)
            if first and event_type != "DELETED":
                self._spawn_thread(self._delete_pod, pod)
            elif event_type == "DELETED":
                self._kill(uid)
            return
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if pod["spec"].get("nodeName") and phase == "Pending":
            with self._lock:
                if uid in self._claimed:
                    return
                self._claimed.add(uid)
            self._spawn_thread(self._run_pod, pod)

    def _spawn_thread(self, target: Any, pod: dict[str, Any]) -> None:
        thread = threading.Thread(
            target=target, args=(pod,), daemon=True, name=f"pod-{pod['metadata']['name']}"
        )
        thread.start()

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        """What a kubelet does for a pod being deleted: stop its processes, then remove it."""
        metadata = pod["metadata"]
        self._kill(metadata["uid"])
        options = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=metadata["uid"])
        )
        try:
            self.core.delete_namespaced_pod(metadata["name"], metadata["namespace"], body=options)
        except ApiException as err:
            if err.status not in (404, 409):  # gone already, or a new pod with the same name
                LOG.warning(
                    "pod %s/%s not removed: %s", metadata["namespace"], metadata["name"], err
                )

    def _kill(self, uid: str) -> None:
        with self._lock:
            processes = self._processes.pop(uid, [])
            self._deleting.add(uid)
        for process in processes:
            process.stop(self.kill_grace_s)

    def _killed(self, uid: str) -> bool:
        with self._lock:
            return uid in self._deleting or self._stop.is_set()

    # ---- running ---------------------------------------------------------------------------
    def _run_pod(self, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        containers = pod["spec"]["containers"]
        pod_dir = self.pod_dir(metadata["namespace"], metadata["name"])
        started_at = pod_spec.now_rfc3339()
        results: dict[str, tuple[int, str, str]] = {}
        try:
            ip = self.addresses.claim(metadata["uid"])
            volumes = pod_spec.local_volume_paths(
                pod, pod_dir, self.pvc_root, self.volume_binder.claim_paths(pod)
            )
            self._prepare_volumes(pod, volumes)
        except (pod_spec.PodSpecError, PodNetworkUnavailable, ApiException, OSError) as err:
            results = {c["name"]: (128, "StartError", str(err)) for c in containers}
            volumes, ip = {}, ""
        try:
            self._run_containers(pod, started_at, ip, volumes, results)
        finally:
            self.addresses.release(metadata["uid"])

    def _run_containers(
        self,
        pod: dict[str, Any],
        started_at: str,
        ip: str,
        volumes: Mapping[str, Path],
        results: dict[str, tuple[int, str, str]],
    ) -> None:
        """Init containers one after another, then the containers side by side; final status."""
        metadata = pod["metadata"]
        containers = pod["spec"]["containers"]
        pod_dir = self.pod_dir(metadata["namespace"], metadata["name"])
        init_containers = [] if results else pod["spec"].get("initContainers") or []
        for init in init_containers:  # one after another; the first failure fails the pod
            code, _, message = self._run_container(pod, init, volumes, pod_dir, ip)
            if code != 0:
                failure = f"init container {init['name']} failed ({code}): {message}"
                results = {c["name"]: (1, "Error", failure) for c in containers}
                break
        if not results:
            probes = [pod_spec.readiness_url(c, ip) for c in containers]
            probed = [(c, url) for c, url in zip(containers, probes, strict=True) if url]
            self._report(pod, pod_spec.running_status(pod, started_at, ip, ready=not probed))
            containers_done = threading.Event()
            prober = None
            if probed:
                prober = threading.Thread(
                    target=self._probe_readiness,
                    args=(pod, started_at, ip, probed, containers_done),
                    daemon=True,
                )
                prober.start()
            threads = [
                threading.Thread(
                    target=lambda c=c: results.__setitem__(
                        c["name"], self._run_restarting(pod, c, volumes, pod_dir, started_at, ip)
                    )
                )
                for c in containers
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            containers_done.set()
            if prober is not None:
                prober.join()
        if not self._killed(metadata["uid"]):
            self._report(pod, pod_spec.terminated_status(pod, started_at, results))

    def _run_restarting(
        self,
        pod: dict[str, Any],
        container: Mapping[str, Any],
        volumes: Mapping[str, Path],
        pod_dir: Path,
        started_at: str,
        ip: str,
    ) -> tuple[int, str, str]:
        """Run a container; under restartPolicy Always restart it when it exits, with backoff.

        As a kubelet does: the pod stays Running and not Ready, the container waits in
        CrashLoopBackOff with its restart count and last exit, and nothing is replaced.
        """
        uid = pod["metadata"]["uid"]
        restarts = 0
        while True:
            result = self._run_container(pod, container, volumes, pod_dir, ip)
            if pod["spec"].get("restartPolicy", "Always") != "Always" or self._killed(uid):
                return result
            restarts += 1
            status = pod_spec.crash_loop_status(
                pod, started_at, ip, container["name"], restarts, result
            )
            self._report(pod, status)
            # A kubelet backs off 10 s, doubling to 5 min; shorter here, tests wait on it.
            if self._stop.wait(min(2.0 * restarts, 10.0)) or self._killed(uid):
                return result

    def _run_container(
        self,
        pod: dict[str, Any],
        container: Mapping[str, Any],
        volumes: Mapping[str, Path],
        pod_dir: Path,
        ip: str,
    ) -> tuple[int, str, str]:
        """Run one container to its end; returns (exit code, reason, termination message)."""
        try:
            return self._run_process(pod, container, volumes, pod_dir, ip)
        except (pod_spec.PodSpecError, ApiException, OSError) as err:
            LOG.warning(
                "container %s of pod %s cannot run locally: %s",
                container["name"],
                pod["metadata"]["name"],
                err,
            )
            return 128, "StartError", str(err)

    def _run_process(
        self,
        pod: dict[str, Any],
        container: Mapping[str, Any],
        volumes: Mapping[str, Path],
        pod_dir: Path,
        ip: str,
    ) -> tuple[int, str, str]:
        """Run one container to its end; returns (exit code, reason, termination message)."""
        name = container["name"]
        pod_dir.mkdir(parents=True, exist_ok=True)
        termination_file = pod_dir / f"{name}.termination-log"
        termination_file.write_bytes(b"")
        log_path = pod_dir / f"{name}.log"
        image = self.images.get(container.get("image", ""))
        if image is not None:
            argv = image_command(
                pod, container, image, volumes, pod_dir, termination_file, self._lookup, ip
            )
            launcher_env = {k: v for k, v in self.base_env.items() if k in ("PATH", "PYTHONPATH")}
            return self._wait(pod, container, argv, log_path, launcher_env, REPO_ROOT)
        mapping = pod_spec.path_map(container, volumes, termination_file)
        for index, (parent, children) in enumerate(
            pod_spec.parent_views(container, mapping).items()
        ):
            view = pod_dir / "views" / f"{name}-{index}"
            view.mkdir(parents=True, exist_ok=True)
            for child, local in children.items():
                if not (view / child).is_symlink():
                    (view / child).symlink_to(local)
            mapping[parent] = str(view)
        env = pod_spec.container_env(pod, container, self.base_env, mapping, self._lookup, ip)
        entrypoint = self.entrypoints.get(container.get("image", ""), ())
        argv = pod_spec.command_line(container, env, mapping, self.command_aliases, entrypoint)
        # Only a workingDir from the spec is a container path; the pod's own folder is local
        # already (and may lie under a mapped path such as /tmp).
        working_dir = container.get("workingDir")
        cwd = Path(pod_spec.rewrite_path(working_dir, mapping)) if working_dir else pod_dir
        if not cwd.is_dir():
            raise pod_spec.PodSpecError(f"workingDir {cwd} does not exist on this machine")
        return self._wait(pod, container, argv, log_path, env, cwd)

    def _wait(
        self,
        pod: dict[str, Any],
        container: Mapping[str, Any],
        argv: list[str],
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path,
    ) -> tuple[int, str, str]:
        """Start the container's process, wait for its end; (exit code, reason, message)."""
        uid, name = pod["metadata"]["uid"], container["name"]
        termination_file = log_path.with_name(f"{name}.termination-log")
        try:
            process = ManagedProcess(name, argv, log_path, env=dict(env), cwd=cwd)
        except OSError as err:
            return 128, "StartError", f"cannot start {argv[0]}: {err}"
        with self._lock:
            if uid in self._deleting:
                process.stop(0)
                return 137, "Error", "pod deleted"
            self._processes.setdefault(uid, []).append(process)
        code = process.popen.wait()
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._processes[uid].remove(process)
        if code < 0:  # killed by a signal: report it the way container runtimes do
            code = 128 + (-code)
        message = pod_spec.read_termination_message(termination_file)
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = log_path.read_bytes()[-FALLBACK_LOG_BYTES:].decode(errors="replace")
        return code, "Completed" if code == 0 else "Error", message

    def _probe_readiness(
        self,
        pod: dict[str, Any],
        started_at: str,
        ip: str,
        probed: list[tuple[Mapping[str, Any], str]],
        done: threading.Event,
    ) -> None:
        """Poll the readiness probes (httpGet, tcpSocket) until the containers end; report
        each change."""
        uid = pod["metadata"]["uid"]
        probes = [container["readinessProbe"] for container, _ in probed]
        period = min(float(p.get("periodSeconds", 10)) for p in probes)
        threshold = max(int(p.get("failureThreshold", 3)) for p in probes)
        done.wait(min(float(p.get("initialDelaySeconds", 0)) for p in probes))
        ready, failures = False, 0
        while not done.is_set() and not self._killed(uid):
            passing = all(probe_ok(url) for _, url in probed)
            failures = 0 if passing else failures + 1
            now_ready = passing or (ready and failures < threshold)
            # Also when the API disagrees: the node lifecycle controller marks pods not Ready
            # while their (kwok) node misses heartbeats, and only a kubelet sets them back.
            if (now_ready != ready or now_ready != self._api_ready(pod)) and not done.is_set():
                ready = now_ready
                status = pod_spec.running_status(pod, started_at, ip, ready, pod_spec.now_rfc3339())
                self._report(pod, status)
            done.wait(period)

    def _api_ready(self, pod: dict[str, Any]) -> bool | None:
        """The pod's Ready condition as the API server has it (None: unknown or gone)."""
        try:
            current = self.core.read_namespaced_pod_status(
                pod["metadata"]["name"], pod["metadata"]["namespace"]
            )
        except ApiException:
            return None
        for condition in (current.status and current.status.conditions) or []:
            if condition.type == "Ready":
                return bool(condition.status == "True")
        return None

    def _prepare_volumes(self, pod: dict[str, Any], volumes: Mapping[str, Path]) -> None:
        namespace = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes") or []:
            path = volumes[volume["name"]]
            path.mkdir(parents=True, exist_ok=True)
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if key in volume:
                    source = volume[key]
                    name = source.get("name") or source.get("secretName", "")
                    data = self._lookup(kind, namespace, name) or {}
                    items = source.get("items") or [{"key": k, "path": k} for k in data]
                    for item in items:
                        if item["key"] in data:
                            target = path / item["path"]
                            target.parent.mkdir(parents=True, exist_ok=True)
                            target.write_text(data[item["key"]])
        # The kubelet creates a subPath that does not exist yet inside its volume.
        for container in pod["spec"].get("containers") or []:
            for mount in container.get("volumeMounts") or []:
                if mount.get("subPath") and mount["name"] in volumes:
                    (volumes[mount["name"]] / mount["subPath"]).mkdir(parents=True, exist_ok=True)

    def _lookup(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            if kind == "ConfigMap":
                return self.core.read_namespaced_config_map(name, namespace).data or {}
            secret = self.core.read_namespaced_secret(name, namespace).data or {}
            return {k: base64.b64decode(v).decode() for k, v in secret.items()}
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _report(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                metadata["name"], metadata["namespace"], {"status": status}
            )
        except ApiException as err:
            if err.status != 404:  # a deleted pod needs no status
                LOG.warning(
                    "status of pod %s/%s not updated: %s",
                    metadata["namespace"],
                    metadata["name"],
                    err,
                )

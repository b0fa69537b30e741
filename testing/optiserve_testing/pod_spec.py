"""Pure translation of a pod's container spec into a local process: command line, environment,
working directory and the local folders that stand in for its volumes, plus the pod status
documents the runner reports. Pods are plain camelCase dicts, as the API server returns them.

Path mapping: a process cannot mount anything, so every `volumeMounts[].mountPath` (and the
container's `terminationMessagePath`) is mapped to a local path, and an argument, env value or
workingDir that *is* such a path, starts with it followed by "/", or is `--flag=<such a path>`
is rewritten to the local path. The full map is also passed as JSON in OPTISERVE_PATH_MAP and the
local termination-message file in OPTISERVE_TERMINATION_MESSAGE_PATH.

Pod network: every pod gets an address of its own, by default in 127.0.0.0/8 (`pod_ip`; or
one added to lo, see pod_network.py), reported as its podIP and passed in OPTISERVE_POD_IP, so
servers in different pods can listen on the same containerPort side by side, as they do in a
cluster; a server binds it when its command says so (the tritonserver stand-in,
tritonserver_shim.py, does).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Pod = Mapping[str, Any]
Container = Mapping[str, Any]
# (kind "ConfigMap" | "Secret", namespace, name) -> its decoded data, or None when absent.
DataLookup = Callable[[str, str, str], Mapping[str, str] | None]

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE_BYTES = 4096
PATH_MAP_ENV = "OPTISERVE_PATH_MAP"
TERMINATION_MESSAGE_ENV = "OPTISERVE_TERMINATION_MESSAGE_PATH"
POD_IP_ENV = "OPTISERVE_POD_IP"
HOST_IP = "127.0.0.1"
# A container "image" has no programs here: a command names a local program instead. `python` is
# the interpreter running the tests; `tritonserver` the stand-in that serves a model repository
# with the local Triton (argv prefixes: the container's own arguments follow).
DEFAULT_COMMAND_ALIASES: Mapping[str, tuple[str, ...]] = {
    "python": (sys.executable,),
    "python3": (sys.executable,),
    "tritonserver": (sys.executable, str(Path(__file__).with_name("tritonserver_shim.py"))),
}


class PodSpecError(ValueError):
    """The pod asks for something the local runner cannot do (reported as the pod's failure)."""


def pod_ip(uid: str) -> str:
    """The pod's own loopback address, from its uid: 127.64.0.1 .. 127.191.255.254.

    Spread over 2^23 addresses so pods of test runs side by side on one machine do not meet.
    """
    digest = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big")
    return f"127.{64 + digest % 128}.{(digest >> 8) % 256}.{1 + (digest >> 16) % 254}"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_volume_paths(
    pod: Pod, pod_dir: Path, pvc_root: Path, claim_paths: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """Local folder of each volume by name. hostPath keeps its path; a PVC becomes
    <pvc_root>/<namespace>/<claim> unless `claim_paths` (claim -> bound PV hostPath) says
    otherwise; emptyDir, configMap and secret volumes get folders under `pod_dir`."""
    namespace = pod["metadata"]["namespace"]
    paths: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "hostPath" in volume:
            paths[name] = Path(volume["hostPath"]["path"])
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            bound = (claim_paths or {}).get(claim)
            paths[name] = Path(bound) if bound else pvc_root / namespace / claim
        elif any(kind in volume for kind in ("emptyDir", "configMap", "secret", "projected")):
            paths[name] = pod_dir / "volumes" / name
        else:
            kinds = sorted(set(volume) - {"name"})
            raise PodSpecError(f"volume {name!r} of kind {kinds} is not supported locally")
    return paths


def path_map(
    container: Container, volumes: Mapping[str, Path], termination_file: Path
) -> dict[str, str]:
    """Container path -> local path, for the container's mounts and its termination message."""
    mapping: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise PodSpecError(f"volumeMount {mount['name']!r} names no volume of the pod")
        local = volumes[mount["name"]] / mount.get("subPath", "")
        mapping[mount["mountPath"].rstrip("/") or "/"] = str(local).rstrip("/")
    message_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
    mapping[message_path] = str(termination_file)
    return mapping


def parent_views(container: Container, mapping: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Parent folders of mounts that the container names, with the mounts inside them.

    A container sees ``/mnt/pvc`` holding ``models`` and ``model-store`` when those two are
    mounted at ``/mnt/pvc/models`` and ``/mnt/pvc/model-store``, and a program may be told the
    parent (``OPTISERVE_PVC_ROOT=/mnt/pvc``). Locally that parent must be a folder of links:
    this returns ``{"/mnt/pvc": {"models": local, "model-store": local}}`` for the runner to
    build. Only parents named exactly in an env value or argument count, so ``/etc`` does not
    become a folder of links just because a ConfigMap is mounted at ``/etc/optiserve``.
    """
    named = {str(e.get("value", "")) for e in container.get("env") or []}
    named |= {
        str(a).partition("=")[2] if str(a).startswith("-") else str(a)
        for a in [*(container.get("command") or []), *(container.get("args") or [])]
    }
    message_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
    views: dict[str, dict[str, str]] = {}
    for container_path, local in mapping.items():
        parent, _, name = container_path.rstrip("/").rpartition("/")
        # A mount right under / has no parent to view ("" would match every absolute path).
        if parent and container_path != message_path and parent in named and parent not in mapping:
            views.setdefault(parent, {})[name] = local
    return views


def rewrite_path(value: str, mapping: Mapping[str, str]) -> str:
    """Map `value` (or the value of `--flag=value`) when it is or lies under a mapped path."""
    prefix, sep, rest = value.partition("=")
    if sep and prefix.startswith("-"):
        return f"{prefix}={rewrite_path(rest, mapping)}"
    # Longest container path first, so /models/cache beats /models.
    for container_path in sorted(mapping, key=len, reverse=True):
        if value == container_path:
            return mapping[container_path]
        if value.startswith(container_path.rstrip("/") + "/"):
            return mapping[container_path] + value[len(container_path.rstrip("/")) :]
    return value


def _field_ref(pod: Pod, field_path: str, ip: str) -> str:
    metadata = pod["metadata"]
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": HOST_IP,
        "status.podIP": ip,
    }
    if field_path in simple:
        return str(simple[field_path])
    for kind in ("labels", "annotations"):
        head = f"metadata.{kind}['"
        if field_path.startswith(head) and field_path.endswith("']"):
            return str((metadata.get(kind) or {}).get(field_path[len(head) : -2], ""))
    raise PodSpecError(f"fieldRef {field_path!r} is not supported by the local pod runner")


def _from_source(
    kind: str, ref: Mapping[str, Any], namespace: str, lookup: DataLookup
) -> Mapping[str, str] | None:
    data = lookup(kind, namespace, ref["name"])
    if data is None and not ref.get("optional", False):
        raise PodSpecError(f"{kind} {namespace}/{ref['name']} does not exist")
    return data


def container_env(
    pod: Pod,
    container: Container,
    base_env: Mapping[str, str],
    mapping: Mapping[str, str],
    lookup: DataLookup,
    ip: str = HOST_IP,
) -> dict[str, str]:
    """Environment of the local process: `base_env`, then envFrom, then env (later wins)."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base_env)
    for source in container.get("envFrom") or []:
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                data = _from_source(kind, source[key], namespace, lookup) or {}
                env.update({source.get("prefix", "") + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name, value_from = item["name"], item.get("valueFrom")
        if value_from is None:
            env[name] = rewrite_path(item.get("value", ""), mapping)
        elif "fieldRef" in value_from:
            env[name] = _field_ref(pod, value_from["fieldRef"]["fieldPath"], ip)
        elif "configMapKeyRef" in value_from or "secretKeyRef" in value_from:
            kind = "ConfigMap" if "configMapKeyRef" in value_from else "Secret"
            ref = value_from["configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef"]
            data = _from_source(kind, ref, namespace, lookup) or {}
            if ref["key"] in data:
                env[name] = data[ref["key"]]
            elif not ref.get("optional", False):
                raise PodSpecError(f"{kind} {ref['name']} has no key {ref['key']!r}")
        else:
            raise PodSpecError(f"env {name!r}: valueFrom {sorted(value_from)} is not supported")
    env[PATH_MAP_ENV] = json.dumps(dict(mapping), sort_keys=True)
    env[POD_IP_ENV] = ip
    message_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
    env[TERMINATION_MESSAGE_ENV] = mapping[message_path]
    return env


def expand_vars(value: str, env: Mapping[str, str]) -> str:
    # Kubernetes expands $(VAR) in command/args from the container env; $$ escapes.
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            name = value[i + 2 : end]
            out.append(env.get(name, value[i : end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def command_line(
    container: Container,
    env: Mapping[str, str],
    mapping: Mapping[str, str],
    aliases: Mapping[str, tuple[str, ...]] = DEFAULT_COMMAND_ALIASES,
    entrypoint: tuple[str, ...] = (),
) -> list[str]:
    """argv of the local process: command + args, $(VAR)-expanded and path-rewritten. A
    container without a command runs its image's ENTRYPOINT, which ``entrypoint`` names (the
    local program standing in for that image's), as a container runtime does."""
    command = list(container.get("command") or entrypoint)
    if not command:
        raise PodSpecError(
            f"container {container['name']!r} has no command; the local runner cannot know "
            f"the entrypoint of its image {container.get('image')!r}"
        )
    argv = [
        rewrite_path(expand_vars(arg, env), mapping)
        for arg in command + list(container.get("args") or [])
    ]
    return [*aliases.get(argv[0], argv[:1]), *argv[1:]]


def read_termination_message(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_TERMINATION_MESSAGE_BYTES).decode(errors="replace")
    except OSError:
        return ""


def running_status(
    pod: Pod, started_at: str, ip: str = HOST_IP, ready: bool = True, at: str | None = None
) -> dict[str, Any]:
    """Status of a pod whose containers run; `at` is when readiness last changed."""
    containers = pod["spec"]["containers"]
    return {
        "phase": "Running",
        "hostIP": HOST_IP,
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started_at,
        "conditions": _conditions(ready=ready, reason=None, at=at or started_at),
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started_at}},
            }
            for c in containers
        ],
    }


def crash_loop_status(
    pod: Pod,
    started_at: str,
    ip: str,
    container: str,
    restarts: int,
    last: tuple[int, str, str],
) -> dict[str, Any]:
    """A Running, not Ready pod whose ``container`` exited ``restarts`` times and backs off."""
    status = running_status(pod, started_at, ip, ready=False, at=now_rfc3339())
    code, reason, message = last
    for entry in status["containerStatuses"]:
        if entry["name"] == container:
            entry["restartCount"] = restarts
            entry["started"] = False
            entry["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
            terminated = {"exitCode": code, "reason": reason, "finishedAt": now_rfc3339()}
            entry["lastState"] = {
                "terminated": terminated | ({"message": message} if message else {})
            }
    return status


def terminated_status(
    pod: Pod, started_at: str, results: Mapping[str, tuple[int, str, str]]
) -> dict[str, Any]:
    """Final status; `results` maps container name -> (exit code, reason, message)."""
    finished_at = now_rfc3339()
    succeeded = all(code == 0 for code, _, _ in results.values())
    statuses = []
    for container in pod["spec"]["containers"]:
        code, reason, message = results.get(container["name"], (1, "Error", "did not run"))
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started_at,
            "finishedAt": finished_at,
        }
        if message:
            terminated["message"] = message
        statuses.append(
            {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        )
    return {
        "phase": "Succeeded" if succeeded else "Failed",
        "conditions": _conditions(ready=False, reason="PodCompleted", at=finished_at),
        "containerStatuses": statuses,
    }


def _conditions(ready: bool, reason: str | None, at: str) -> list[dict[str, str]]:
    conditions = []
    for kind, status in (
        ("PodReadyToStartContainers", ready),
        ("Initialized", True),
        ("Ready", ready),
        ("ContainersReady", ready),
        ("PodScheduled", True),
    ):
        condition = {
            "type": kind,
            "status": "True" if status else "False",
            "lastTransitionTime": at,
        }
        if reason and not status:
            condition["reason"] = reason
        conditions.append(condition)
    return conditions


def readiness_url(container: Container, ip: str) -> str | None:
    """The URL of the container's readiness probe (``tcp://ip:port`` for a tcpSocket probe),
    or None when it has none."""
    spec = container.get("readinessProbe") or {}
    probe = spec.get("httpGet") or spec.get("tcpSocket")
    if probe is None:
        return None
    port = probe["port"]
    if isinstance(port, str) and not port.isdigit():
        named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        if port not in named:
            raise PodSpecError(f"readiness probe port {port!r} is not a named port")
        port = named[port]
    if "tcpSocket" in spec:
        return f"tcp://{probe.get('host') or ip}:{port}"
    path = probe.get("path") or "/"
    return f"{probe.get('scheme', 'HTTP').lower()}://{probe.get('host') or ip}:{port}{path}"

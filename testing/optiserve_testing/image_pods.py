"""A pod's container run from a built image (optiserve_testing/images.py) instead of this checkout.

When the pod runner is given images (reference -> BuiltImage) and a container names one of them,
the container runs inside that image's root filesystem (optiserve_testing/image_exec.py) the way a
kubelet and a container runtime would: the image's Entrypoint/Cmd unless the pod gives
command/args, the image's Env under the container's env, the pod's volumes bind-mounted at their
mountPaths (readOnly honoured), the termination message file at terminationMessagePath, the
pod's runAsUser/runAsGroup (else the image's USER), fsGroup as a supplementary group that owns
the pod's claims and emptyDirs, and a read-only root. Nothing of this machine's virtualenv is
visible: what passes is what a cluster would run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optiserve_testing import pod_spec
from optiserve_testing.image_exec import ExecSpec, Mount, launcher_argv, write_spec
from optiserve_testing.images import BuiltImage


def run_as(pod: Mapping[str, Any], container: Mapping[str, Any], image: BuiltImage) -> list[int]:
    """[uid, gid, supplementary groups...] as the kubelet resolves them."""
    uid, gid = image.user
    for context in (pod["spec"].get("securityContext"), container.get("securityContext")):
        context = context or {}
        uid = int(context.get("runAsUser", uid))
        gid = int(context.get("runAsGroup", gid))
    if (container.get("securityContext") or {}).get("runAsNonRoot") and uid == 0:
        raise pod_spec.PodSpecError(f"image {image.reference} would run as root (runAsNonRoot)")
    fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    return [uid, gid, *([int(fs_group)] if fs_group is not None else [])]


def give_volumes_to_fs_group(pod: Mapping[str, Any], volumes: Mapping[str, Path]) -> None:
    """What a kubelet does with fsGroup for claims and emptyDirs: group-own them, group-write."""
    fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    for volume in pod["spec"].get("volumes") or []:
        path = volumes.get(volume["name"])
        if path is None:
            continue
        if "emptyDir" in volume:
            path.chmod(0o1777 if fs_group is None else 0o2775)
        if fs_group is None or not ({"persistentVolumeClaim", "emptyDir"} & set(volume)):
            continue
        for folder, _, files in os.walk(path):
            os.chown(folder, -1, int(fs_group))
            Path(folder).chmod(Path(folder).stat().st_mode | 0o2070)
            for name in files:
                file = Path(folder) / name
                if not file.is_symlink():
                    os.chown(file, -1, int(fs_group))
                    file.chmod(file.stat().st_mode | 0o060)


def exec_spec(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    image: BuiltImage,
    volumes: Mapping[str, Path],
    termination_file: Path,
    env: Mapping[str, str],
    scratch: Path,
    reference: str = "",
) -> ExecSpec:
    """The launcher's spec for one container; `env` is the container's own (pod_spec)."""
    mounts = []
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise pod_spec.PodSpecError(f"volumeMount {mount['name']!r} names no volume")
        source = volumes[mount["name"]] / mount.get("subPath", "")
        mounts.append(Mount(str(source), mount["mountPath"], bool(mount.get("readOnly"))))
    message_path = (
        container.get("terminationMessagePath") or pod_spec.DEFAULT_TERMINATION_MESSAGE_PATH
    )
    mounts.append(Mount(str(termination_file), message_path))
    full_env = {**image.env, **env}
    # As a runtime does: the pod's command replaces the Entrypoint (and drops Cmd); args
    # replace Cmd. $(VAR) is expanded by the kubelet against the container's env.
    command = list(container.get("command") or image.config.get("Entrypoint") or [])
    args = container.get("args")
    if args is None:
        args = [] if container.get("command") else list(image.config.get("Cmd") or [])
    argv = [pod_spec.expand_vars(arg, full_env) for arg in [*command, *args]]
    uid, gid, *groups = run_as(pod, container, image)
    return ExecSpec(
        image=reference or image.reference,
        rootfs=str(image.rootfs()),
        argv=argv,
        env=full_env,
        uid=uid,
        gid=gid,
        groups=[gid, *groups],
        scratch=str(scratch),
        cwd=container.get("workingDir") or image.config.get("WorkingDir") or "/",
        mounts=mounts,
        hide=list(image.hidden),
    )


HARNESS_ONLY_ENV = (pod_spec.PATH_MAP_ENV, pod_spec.POD_IP_ENV, pod_spec.TERMINATION_MESSAGE_ENV)


def image_command(
    pod: dict[str, Any],
    container: Mapping[str, Any],
    image: BuiltImage,
    volumes: Mapping[str, Path],
    pod_dir: Path,
    termination_file: Path,
    lookup: pod_spec.DataLookup,
    ip: str,
) -> list[str]:
    """argv that runs the container in its image (the launcher, with its spec in pod_dir);
    ``ip`` is the pod's address (pod_network.py)."""
    give_volumes_to_fs_group(pod, volumes)
    termination_file.chmod(0o666)  # the container's user writes it, as on a kubelet
    # Paths need no rewriting: the volumes are mounted where the container expects them.
    identity = {m["mountPath"]: m["mountPath"] for m in container.get("volumeMounts") or []}
    message_path = (
        container.get("terminationMessagePath") or pod_spec.DEFAULT_TERMINATION_MESSAGE_PATH
    )
    identity[message_path] = message_path
    env = pod_spec.container_env(pod, container, {}, identity, lookup, ip)
    for name in HARNESS_ONLY_ENV:
        env.pop(name, None)
    scratch = pod_dir / "rootfs" / container["name"]
    spec = exec_spec(
        pod, container, image, volumes, termination_file, env, scratch, container["image"]
    )
    spec_path = pod_dir / f"{container['name']}.image-exec.json"
    return launcher_argv(write_spec(spec, spec_path))

"""Run one command inside an image's unpacked root filesystem, as a container runtime would.

    python -m optiserve_testing.image_exec SPEC.json

SPEC (written by `exec_spec`): the root filesystem, argv, env, uid/gid, working directory,
bind mounts (the pod's volumes) and a scratch folder. In a mount namespace of its own, this
process mounts an overlay over the root filesystem (upper layer in scratch, so the unpacked
image is never written), creates the mount points, remounts the root read-only (as
readOnlyRootFilesystem does), binds /dev, /proc, /sys and the volumes, then chroots, drops to
the image's numeric user (no supplementary groups but its own) and execs the command. Being an
exec, the command keeps this process's pid: signals and the exit code are the container's.

Needs root on the machine (mount, chroot); a failure before the exec is reported on stderr,
naming the image, with exit code 127 (as a runtime reports an entrypoint it cannot start).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

CLONE_NEWNS = 0x00020000
CANNOT_START = 127


@dataclass(frozen=True)
class Mount:
    source: str  # on this machine
    target: str  # in the container
    read_only: bool = False


@dataclass(frozen=True)
class ExecSpec:
    image: str  # the reference, for messages
    rootfs: str
    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    scratch: str
    cwd: str = "/"
    groups: list[int] = field(default_factory=list)  # supplementary; default: [gid]
    mounts: list[Mount] = field(default_factory=list)
    # Paths deleted from the container's view before it starts (the overlay hides them): how a
    # test makes a broken image (a missing package) without building one.
    hide: list[str] = field(default_factory=list)


def write_spec(spec: ExecSpec, path: Path) -> Path:
    path.write_text(json.dumps(asdict(spec)))
    return path


def read_spec(path: Path) -> ExecSpec:
    raw = json.loads(path.read_text())
    raw["mounts"] = [Mount(**m) for m in raw.get("mounts", [])]
    return ExecSpec(**raw)


def launcher_argv(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "optiserve_testing.image_exec", str(spec_path)]


class StartError(RuntimeError):
    pass


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StartError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")


def _inside(root: Path, container_path: str, hops: int = 0) -> Path:
    """Where a container path lies under root, following the image's symlinks inside root (an
    absolute link such as /var/run -> /run must not lead to this machine's /run)."""
    parts = [part for part in container_path.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    for index, part in enumerate(parts):
        if part == "..":
            resolved = resolved[:-1]
            continue
        here = root.joinpath(*resolved, part)
        if here.is_symlink():
            if hops > 40:
                raise StartError(f"{container_path}: too many levels of symbolic links")
            target = str(here.readlink())
            base = "" if target.startswith("/") else "/".join(resolved)
            rest = "/".join(parts[index + 1 :])
            return _inside(root, f"{base}/{target}/{rest}", hops + 1)
        resolved.append(part)
    return root.joinpath(*resolved)


def _make_mount_point(root: Path, target: str, source: Path) -> Path:
    point = _inside(root, target)
    if source.is_dir():
        point.mkdir(parents=True, exist_ok=True)
    else:
        point.parent.mkdir(parents=True, exist_ok=True)
        point.touch(exist_ok=True)
    return point


def prepare(spec: ExecSpec) -> Path:
    """Mount the container's view (in this process's own mount namespace); return its root."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise StartError(f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
    _run("mount", "--make-rprivate", "/")
    scratch = Path(spec.scratch)
    upper, work, root = scratch / "upper", scratch / "work", scratch / "root"
    for folder in (upper, work, root):
        folder.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={spec.rootfs},upperdir={upper},workdir={work}"
    _run("mount", "-t", "overlay", "overlay", "-o", options, str(root))
    for hidden in spec.hide:
        path = _inside(root, hidden)
        if path.is_dir() and not path.is_symlink():
            _run("rm", "-rf", str(path))
        else:
            path.unlink(missing_ok=True)
    _mount_dev(root)
    for system in ("/proc", "/sys"):
        _inside(root, system).mkdir(exist_ok=True)
    try:
        _run("mount", "-t", "proc", "proc", str(_inside(root, "/proc")))
    except StartError:  # a machine that refuses a new proc mount (itself a container)
        _run("mount", "--rbind", "/proc", str(_inside(root, "/proc")))
    _run("mount", "--rbind", "/sys", str(_inside(root, "/sys")))
    _run("mount", "-o", "remount,bind,ro", str(_inside(root, "/sys")))
    points = [(m, _make_mount_point(root, m.target, Path(m.source))) for m in spec.mounts]
    _inside(root, spec.cwd).mkdir(parents=True, exist_ok=True)  # as a kubelet does
    _run("mount", "-o", "remount,bind,ro", str(root))
    for mount, point in points:
        _run("mount", "--rbind", mount.source, str(point))
        if mount.read_only:
            _run("mount", "-o", "remount,bind,ro", str(point))
    return root


def _mount_dev(root: Path) -> None:
    """A /dev of its own, as runtimes give: a tmpfs with the harmless devices bound in, and a
    /dev/shm (so a file mount such as /dev/termination-log never touches this machine's /dev)."""
    dev = _inside(root, "/dev")
    dev.mkdir(exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", str(dev))
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        (dev / name).touch()
        _run("mount", "--bind", f"/dev/{name}", str(dev / name))
    (dev / "shm").mkdir()
    _run("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", str(dev / "shm"))
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        (dev / name).symlink_to(target)


def find_executable(root: Path, command: str, env: Mapping[str, str]) -> str:
    if "/" in command:
        return command
    for folder in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":"):
        candidate = _inside(root, f"{folder}/{command}")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return f"{folder}/{command}"
    raise StartError(f'executable "{command}" not found in the image\'s PATH {env.get("PATH")}')


def main(argv: Sequence[str]) -> None:
    spec = read_spec(Path(argv[0]))
    try:
        if not spec.argv:
            raise StartError("no command: the pod and the image give none")
        root = prepare(spec)
        executable = find_executable(root, spec.argv[0], spec.env)
        os.chroot(root)
        os.chdir(spec.cwd)
        os.setgroups(spec.groups or [spec.gid])
        os.setgid(spec.gid)
        os.setuid(spec.uid)
        os.execve(executable, spec.argv, spec.env)
    except Exception as err:  # whatever stops the start, the message names the image
        print(f"image {spec.image}: cannot start {spec.argv[:1]}: {err}", file=sys.stderr)
        sys.exit(CANNOT_START)


if __name__ == "__main__":
    main(sys.argv[1:])

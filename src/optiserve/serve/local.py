"""A real ``tritonserver`` on this machine, started for a model repository and stopped after.

``LocalTriton`` turns the production repository into its CPU twin (see ``repository.py``),
starts the server on free loopback ports with the same flags the cluster uses
(``render.triton.triton_server_args``), and returns only once Triton reports ready. Every
failure is typed and carries the end of Triton's log: a missing binary, a server that exits,
a model that fails to load, or a server still not ready when the timeout runs out.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from optiserve.api.serving import ResponseCacheSpec, ServingSpec
from optiserve.render.triton import ModelControlMode, triton_server_args
from optiserve.serve.errors import ModelLoadError, TritonStartError, TritonTimeoutError
from optiserve.serve.install import TritonInstall, find_triton
from optiserve.serve.probe import http_ok, poll_until
from optiserve.serve.repository import localize_repository, response_cache_used

LOG_TAIL_LINES = 40
POLL_SECONDS = 0.2
# Triton logs a model that fails to load as
#   ... "failed to load 'digits' version 1: Internal: <why>"
# and one whose config it refuses before loading as
#   ... "Poll failed for model directory 'digits': <why>"
_LOAD_FAILURES = (
    re.compile(r"failed to load '([^']+)' version \d+: (.*?)\"?$"),
    re.compile(r"Poll failed for model directory '([^']+)': (.*?)\"?$"),
)
# Error lines that are only noise on a machine without a GPU.
_CPU_ONLY_NOISE = ("CudaDriverHelper",)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PORT_IN_USE = ("address already in use", "failed to bind", "failed to start")


class LocalTriton:
    """``with LocalTriton(repo) as triton: triton.http_url`` — a ready server, stopped on exit."""

    def __init__(
        self,
        repository: Path,
        serving: ServingSpec | None = None,
        *,
        startup_timeout_s: float = 120.0,
        threads_per_instance: int = 1,
        ports: tuple[int, int, int] | None = None,
        host: str = "127.0.0.1",
        log_verbose: int = 0,
        install: TritonInstall | None = None,
        model_control_mode: ModelControlMode = "none",
        metrics_config: Sequence[str] = (),
    ) -> None:
        self.repository = repository
        self.serving = serving
        self.startup_timeout_s = startup_timeout_s
        self.threads_per_instance = threads_per_instance
        self.requested_ports = ports
        # Address all three endpoints bind to; loopback unless the caller exposes the server.
        self.host = host
        self.log_verbose = log_verbose
        self.install = install
        # "explicit": every model is loaded at start; a caller may then edit the local copy's
        # config.pbtxt and load it again (the tuning search measures config variants so).
        self.model_control_mode = model_control_mode
        # Triton's --metrics-config settings, e.g. summary_latencies=true (canary analysis).
        self.metrics_config = tuple(metrics_config)
        self.models: list[str] = []
        self.http_port = self.grpc_port = self.metrics_port = 0
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._shm_prefix = f"optiserve_{uuid.uuid4().hex[:8]}_"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"  # tritonclient.grpc takes host:port

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def local_repository(self) -> Path | None:
        """The CPU twin the server reads (``None`` before ``start``)."""
        return None if self._workdir is None else Path(self._workdir.name) / "repository"

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group: the python stubs share it)."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the server process is still alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> LocalTriton:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        install = self.install or find_triton()
        self._workdir = tempfile.TemporaryDirectory(prefix="optiserve-triton-")
        root = Path(self._workdir.name)
        local_repo = root / "repository"
        local_repo.mkdir()
        try:
            self.models = localize_repository(
                self.repository, local_repo, self.threads_per_instance
            )
            backends = install.make_backend_directory(root)
            # A fixed port pair can only be retried with the same ports; free ones are re-drawn.
            attempts = 1 if self.requested_ports else 3
            for attempt in range(attempts):
                self._launch(install, local_repo, backends, root / f"triton-{attempt}.log")
                try:
                    self._wait_ready()
                    return
                except TritonStartError as error:
                    self.stop(keep_workdir=True)
                    port_clash = any(s in error.log_tail.lower() for s in _PORT_IN_USE)
                    if not port_clash or attempt == attempts - 1:
                        raise
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        """Triton's whole log so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, keep_workdir: bool = False) -> None:
        """Stops the server (SIGTERM, then SIGKILL after its exit timeout); safe to repeat."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # The python-backend stubs are in the server's process group, started by us.
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        _remove_shared_memory(self._shm_prefix)
        if not keep_workdir and self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def _launch(self, install: TritonInstall, repo: Path, backends: Path, log: Path) -> None:
        http, grpc, metrics = self.requested_ports or _free_ports(3)
        self.http_port, self.grpc_port, self.metrics_port = http, grpc, metrics
        serving = self.serving
        if serving is None and response_cache_used(self.repository):
            serving = ServingSpec(response_cache=ResponseCacheSpec(enabled=True))
        args = triton_server_args(
            serving,
            str(repo),
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
            backend_directory=str(backends),
            cache_directory=str(install.cache_directory),
            log_verbose=self.log_verbose,
            exit_timeout_seconds=10,
            model_control_mode=self.model_control_mode,
            load_models=self.models if self.model_control_mode == "explicit" else (),
        )
        args += [
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            *(f"--metrics-config={setting}" for setting in self.metrics_config),
        ]
        self._log_path = log
        with log.open("wb") as log_file:
            self._process = subprocess.Popen(
                [str(install.binary), *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=install.environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def _wait_ready(self) -> None:
        def ready() -> bool:
            process = self._process
            if process is None or process.poll() is not None:
                self._raise_exit(None if process is None else process.returncode)
            return http_ok(f"{self.http_url}/v2/health/ready")

        if not poll_until(ready, self.startup_timeout_s, POLL_SECONDS):
            raise TritonTimeoutError(
                f"tritonserver not ready after {self.startup_timeout_s:.0f}s", self.log_tail()
            )

    def _raise_exit(self, code: int | None) -> None:
        log = self.log()
        failures: dict[str, str] = {}
        errors = []
        for line in log.splitlines():
            for pattern in _LOAD_FAILURES:
                match = pattern.search(line)
                if match:
                    failures.setdefault(match.group(1), match.group(2))
            if re.match(r"E\d{4} ", line) and not any(n in line for n in _CPU_ONLY_NOISE):
                errors.append(line)
        tail = "\n".join(log.splitlines()[-LOG_TAIL_LINES:])
        if failures:
            raise ModelLoadError(failures, tail)
        summary = "; ".join(errors[-3:]) or "no error lines logged"
        raise TritonStartError(
            f"tritonserver exited with code {code} before it was ready: {summary}", tail
        )


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills the server when its starter dies.

    The server has a session of its own (so a signal can stop it with its python stubs),
    which also means nothing else takes it down when the starting process is SIGKILLed.
    Linux ties this to the starting *thread*: start LocalTriton from a thread that outlives it.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _free_ports(count: int) -> tuple[int, ...]:
    """Ports the kernel just handed out on loopback; Triton binds them right after."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return tuple(sock.getsockname()[1] for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _remove_shared_memory(prefix: str) -> None:
    # A killed stub leaves its regions behind in /dev/shm; they are ours by their prefix.
    shm = Path("/dev/shm")
    if shm.is_dir():
        for region in shm.glob(f"{prefix}*"):
            region.unlink(missing_ok=True)

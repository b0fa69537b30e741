"""Where the local ``tritonserver``, its python backend and their libraries live.

Two layouts are understood:

* ``$OPTISERVE_TRITON_HOME`` pointing at a real Triton install (``bin/tritonserver``,
  ``backends/``, ``caches/``, as in ``/opt/tritonserver`` of the NGC image);
* otherwise the ``nvidia-pytriton`` wheel: ``pytriton/tritonserver/{bin,backends,caches}``,
  its bundled shared libraries in ``nvidia_pytriton.libs`` next to the package, and one
  python-backend stub per Python version in ``pytriton/tritonserver/python_backend_stubs``.

The stub embeds CPython and must match the interpreter whose packages the models import
(numpy, onnxruntime). It links ``libpython3.X.so.1.0``: we put this interpreter's own
``LIBDIR`` first on ``LD_LIBRARY_PATH`` so the stub runs the same patch release, and this
interpreter's ``bin`` first on ``PATH``, because an embedded CPython locates its prefix by
finding ``python3`` on ``PATH``, which makes it pick up a virtual environment's
``pyvenv.cfg`` and site-packages (the same trick pytriton uses).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from optiserve.serve.errors import TritonNotFoundError

TRITON_HOME_ENV = "OPTISERVE_TRITON_HOME"
STUB_NAME = "triton_python_backend_stub"
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
# The python backend's own imports; onnxruntime is what our model.py adds.
STUB_PYTHON_MODULES = ("numpy", "onnxruntime")


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path  # folder holding libtriton_python.so
    stub: Path  # triton_python_backend_stub for this interpreter's version
    cache_directory: Path  # holds local/libtritoncache_local.so
    library_path: tuple[Path, ...]  # LD_LIBRARY_PATH entries, first wins

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The process environment ``tritonserver`` and its python stubs need."""
        env = dict(os.environ if base is None else base)
        existing = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
        env["LD_LIBRARY_PATH"] = ":".join([str(p) for p in self.library_path] + existing)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # Child processes of the stub must not inherit a parent's PYTHONHOME/PYTHONPATH
        # pointing elsewhere: the venv found on PATH decides the packages.
        env.pop("PYTHONHOME", None)
        return env

    def make_backend_directory(self, root: Path) -> Path:
        """``root/backends/python`` with the backend, its utils and the matching stub.

        Symlinks, not copies: the backend is only found through ``--backend-directory``, and
        the stub is taken from the backend's folder, so a private folder lets us choose the
        stub without touching the installed files.
        """
        python_dir = root / "backends" / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for name in PYTHON_BACKEND_FILES:
            _link(self.python_backend / name, python_dir / name)
        _link(self.stub, python_dir / STUB_NAME)
        return root / "backends"


def find_triton() -> TritonInstall:
    """The local Triton install, or a typed error that says what is missing and how to fix it."""
    home = os.environ.get(TRITON_HOME_ENV)
    install = _from_home(Path(home)) if home else _from_pytriton()
    _check_python_modules()
    missing = missing_libraries(install.binary, install.environment())
    missing += missing_libraries(install.stub, install.environment())
    if missing:
        raise TritonNotFoundError(
            "shared libraries needed by tritonserver are missing: "
            + ", ".join(sorted(set(missing)))
            + f" (searched LD_LIBRARY_PATH {':'.join(str(p) for p in install.library_path)})"
        )
    return install


def missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """Libraries ``ldd`` cannot resolve for ``binary``; empty when ``ldd`` is not installed."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    result = subprocess.run(
        [ldd, str(binary)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    # A glibc older than the binary needs shows as "version `GLIBC_2.35' not found".
    return [
        line.strip().split()[0] if "=>" in line else line.strip()
        for line in (result.stdout + result.stderr).splitlines()
        if "not found" in line
    ]


def _from_pytriton() -> TritonInstall:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonNotFoundError(
            "no tritonserver: install the nvidia-pytriton wheel (it ships a CPU tritonserver "
            f"with the python backend) or set {TRITON_HOME_ENV} to a Triton install"
        )
    package = Path(spec.origin).parent
    dist = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / STUB_NAME
    if not stub.is_file():
        available = sorted(p.name for p in (dist / "python_backend_stubs").glob("*"))
        raise TritonNotFoundError(
            f"pytriton has no python-backend stub for Python {version} (it has: "
            f"{', '.join(available) or 'none'}); run optiserve with one of those versions"
        )
    install = TritonInstall(
        binary=dist / "bin" / "tritonserver",
        python_backend=dist / "backends" / "python",
        stub=stub,
        cache_directory=dist / "caches",
        library_path=(*_python_libdir(), package.parent / "nvidia_pytriton.libs"),
    )
    _check_files(install)
    return install


def _from_home(home: Path) -> TritonInstall:
    python_backend = home / "backends" / "python"
    install = TritonInstall(
        binary=home / "bin" / "tritonserver",
        python_backend=python_backend,
        stub=python_backend / STUB_NAME,
        cache_directory=home / "caches",
        library_path=(*_python_libdir(), home / "lib"),
    )
    _check_files(install)
    return install


def _check_files(install: TritonInstall) -> None:
    needed = [install.binary, install.stub, install.cache_directory / "local"]
    needed += [install.python_backend / name for name in PYTHON_BACKEND_FILES]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        raise TritonNotFoundError(f"incomplete Triton install, missing: {', '.join(missing)}")
    if not os.access(install.binary, os.X_OK):
        raise TritonNotFoundError(f"{install.binary} is not executable")


def _check_python_modules() -> None:
    missing = [m for m in STUB_PYTHON_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise TritonNotFoundError(
            f"the python backend runs models with {sys.executable}, which lacks "
            f"{', '.join(missing)}; pip install them into that environment"
        )


def _python_libdir() -> tuple[Path, ...]:
    """This interpreter's shared libpython folder, when it has one (pyenv, Debian, conda)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY")
    if libdir and library and (Path(libdir) / str(library)).exists():
        return (Path(libdir),)
    return ()


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)

"""TensorRT's shared libraries for NVIDIA's ``tensorrt_bindings`` wheel, from optiserve's cache.

Installed as ``tensorrt_libs/__init__.py`` by optiserve's hack/tensorrt/install.sh. NVIDIA's
bindings import ``tensorrt_libs`` first, the hook its own ``tensorrt-*-libs`` wheel fills (that
wheel downloads from an index this project cannot reach). This one loads the libraries that
install.sh extracted from Maven Central, so nobody sets LD_LIBRARY_PATH: once a library with a
given soname is loaded, the dynamic loader resolves the bindings' NEEDED entries to it.
``OPTISERVE_TENSORRT_LIBS`` names another folder (the device runner uses it).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

LIB_DIR = Path(os.environ.get("OPTISERVE_TENSORRT_LIBS") or "@LIB_DIR@")


def _major(lib_dir: Path) -> str:
    """TensorRT's major version, from the libnvinfer in the folder (11 when there is none).

    The pinned release is 11; the GPU runner may carry another (10.6, whose redist still has the
    builder's kernel library), and the sonames carry the major.
    """
    found = sorted(p.name.rsplit(".", 1)[1] for p in lib_dir.glob("libnvinfer.so.*"))
    return next((major for major in found if major.isdigit()), "11")


MAJOR = _major(LIB_DIR)
# Dependencies first: the plugin library needs libnvinfer. The builder's kernel resource is
# opened by libnvinfer itself when needed (its RUNPATH is $ORIGIN, the same folder).
LIBRARIES = tuple(f"lib{name}.so.{MAJOR}" for name in ("nvinfer", "nvinfer_plugin", "nvonnxparser"))
# TensorRT 11 is built with CUDA 13, TensorRT 10 with CUDA 12.
CUDA_MAJOR = "13" if int(MAJOR) >= 11 else "12"

_missing = [name for name in LIBRARIES if not (LIB_DIR / name).is_file()]
if _missing:
    raise ImportError(
        f"TensorRT's libraries are missing from {LIB_DIR} ({', '.join(_missing)}): "
        "run hack/tensorrt/install.sh (make tensorrt), or set OPTISERVE_TENSORRT_LIBS"
    )

# TensorRT opens NVRTC at run time for some kernels; where an NVRTC wheel of its CUDA major is
# installed (PyTorch's CUDA builds bring one), load it so that dlopen finds it. Absent is fine.
for _entry in sys.path:
    for _nvrtc in sorted(Path(_entry or ".").glob(f"nvidia/*/lib/libnvrtc.so.{CUDA_MAJOR}")):
        try:
            ctypes.CDLL(str(_nvrtc), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue

handles = [ctypes.CDLL(str(LIB_DIR / name), mode=ctypes.RTLD_GLOBAL) for name in LIBRARIES]

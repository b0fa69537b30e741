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
# Dependencies first: the plugin library needs libnvinfer. The builder's PTX resource is opened
# by libnvinfer itself when needed (its RUNPATH is $ORIGIN, the same folder).
LIBRARIES = ("libnvinfer.so.11", "libnvinfer_plugin.so.11", "libnvonnxparser.so.11")

_missing = [name for name in LIBRARIES if not (LIB_DIR / name).is_file()]
if _missing:
    raise ImportError(
        f"TensorRT's libraries are missing from {LIB_DIR} ({', '.join(_missing)}): "
        "run hack/tensorrt/install.sh (make tensorrt), or set OPTISERVE_TENSORRT_LIBS"
    )

# TensorRT opens NVRTC at run time for some kernels; where a CUDA 13 NVRTC wheel is installed
# (PyTorch's cu13 builds bring one), load it so that dlopen finds it. Absent is fine.
for _entry in sys.path:
    for _nvrtc in sorted(Path(_entry or ".").glob("nvidia/*/lib/libnvrtc.so.13")):
        try:
            ctypes.CDLL(str(_nvrtc), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue

handles = [ctypes.CDLL(str(LIB_DIR / name), mode=ctypes.RTLD_GLOBAL) for name in LIBRARIES]

"""``import tensorrt`` for NVIDIA's ``tensorrt_bindings`` wheel (the module has that name there).

Installed as ``tensorrt/__init__.py`` by optiserve's hack/tensorrt/install.sh: the module
``tensorrt`` *is* ``tensorrt_bindings`` afterwards (same object), so ``tensorrt.Builder``,
``tensorrt.__version__`` and ``tensorrt.plugin`` are NVIDIA's own.
"""

from __future__ import annotations

import importlib
import sys

# First, so that missing libraries are reported as such (the bindings swallow this ImportError).
importlib.import_module("tensorrt_libs")
tensorrt_bindings = importlib.import_module("tensorrt_bindings")

sys.modules[__name__] = tensorrt_bindings

# optiserve's loader of TensorRT's libraries (hack/tensorrt/shim/tensorrt_libs.py).
import ctypes
from pathlib import Path

LIB_DIR: Path
LIBRARIES: tuple[str, ...]
handles: list[ctypes.CDLL]

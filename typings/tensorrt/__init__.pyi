# `import tensorrt` is NVIDIA's tensorrt_bindings module (hack/tensorrt/shim/tensorrt.py); its
# stubs are generated from the real bindings by hack/tensorrt/stubs.sh.
from tensorrt_bindings import *
from tensorrt_bindings import __version__ as __version__

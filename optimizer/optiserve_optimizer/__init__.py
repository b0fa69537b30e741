"""The optiserve optimizer: export, prune, recover, quantize, build, gate, benchmark, package.

Heavy libraries (torch, onnxruntime, tensorrt) are imported inside the functions that use
them, so ``plan``, ``digest`` and ``main --help`` stay importable in the operator's image.
"""

"""Example models built offline: a digits CNN (TorchScript) and all-MiniLM-L6-v2 (ONNX)."""

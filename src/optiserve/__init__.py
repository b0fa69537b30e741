"""optiserve: optimize a trained model and serve it with NVIDIA Triton."""

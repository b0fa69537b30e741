"""Pure renderers: spec and result in, Kubernetes objects and Triton configs out. No I/O."""

"""The optiserve operator: reconciles OptimizedModels into an optimization Job and a Triton
Deployment. Pure decisions live in ``conditions``, ``observe``, ``summary`` and ``reconcile``;
``kube`` is the only module that talks to the API server; ``handlers`` wires them to kopf.

It must never import torch, onnxruntime or tensorrt: the operator image stays small.
"""

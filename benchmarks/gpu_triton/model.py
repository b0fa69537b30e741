"""Triton python-backend model for benchmarks/gpu_triton: all-MiniLM-L6-v2 in PyTorch on the GPU.

The Triton of the nvidia-pytriton wheel has only the python backend, so on the lent GPU the
model runs in PyTorch (FP16, CUDA) inside it: what is measured is Triton's dynamic batcher
joining concurrent requests into one execution, against one execution per request. Every
execution concatenates the requests it was given, runs the encoder once, mean-pools over the
attention mask, normalizes (as sentence-transformers does) and splits the rows back.
"""

import json
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils  # provided by the python backend
from transformers import AutoModel

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        path = config["parameters"]["model_dir"]["string_value"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: the rehearsal
        model = AutoModel.from_pretrained(path).eval().to(self.device)
        self.model = model.half() if self.device == "cuda" else model

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in INPUTS
        }
        sizes = [len(a) for a in arrays["input_ids"]]
        with torch.inference_mode():
            feed = {
                k: torch.from_numpy(np.concatenate(v)).to(self.device) for k, v in arrays.items()
            }
            hidden = self.model(**feed).last_hidden_state
            mask = feed["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            rows = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
        responses: list[Any] = []
        start = 0
        for size in sizes:
            out = pb_utils.Tensor("embedding", rows[start : start + size])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += size
        return responses

"""Small TorchScript models (built in well under a second) whose inputs are easy to feed wrongly.

- ``two_input``: ``forward(a, b)``, two float inputs of the same shape and different weights;
  the .npz stores ``b`` before ``a``.
- ``tiny_bert``: ``forward(input_ids, attention_mask, token_type_ids)`` with masked attention
  and masked mean pooling; the .npz stores the Hugging Face tokenizer's key order (input_ids,
  token_type_ids, attention_mask). ``use_mask=False`` gives the same weights ignoring the mask
  (attends to and pools over the padding), the "mask-dropping source".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

VOCAB = 60
WIDTH = 16
SEQUENCE = 12


def two_input(folder: Path, count: int = 64) -> tuple[Path, Path]:
    """(model.pt, eval.npz with arrays b, a, labels: the model's own top-1)."""
    import torch

    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left = torch.nn.Linear(8, 5)
            self.right = torch.nn.Linear(8, 5)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.left(a) + 3.0 * self.right(torch.tanh(b))
            return logits

    torch.manual_seed(0)
    module = TwoInputs().eval()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(count, 8)).astype(np.float32)
    b = rng.normal(size=(count, 8)).astype(np.float32)
    scripted: Any = torch.jit.script(module)
    with torch.no_grad():
        labels = scripted(a=torch.from_numpy(a), b=torch.from_numpy(b)).argmax(dim=1).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    scripted.save(str(folder / "two.pt"))
    np.savez(folder / "two.npz", b=b, a=a, labels=labels.astype(np.int64))  # b first
    return folder / "two.pt", folder / "two.npz"


def two_input_hidden(folder: Path, count: int = 256) -> tuple[Path, Path, Path]:
    """(model.pt ``forward(a, b)`` with a prunable hidden layer on ``a``, eval.npz stored
    b, a, labels and train.npz stored labels, b, a)."""
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(8, 48)
            self.out = torch.nn.Linear(48, 5)
            self.side = torch.nn.Linear(8, 5)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.out(torch.relu(self.hidden(a))) + 2.0 * self.side(b)
            return logits

    torch.manual_seed(0)
    scripted: Any = torch.jit.script(Hidden().eval())
    rng = np.random.default_rng(1)
    a = rng.normal(size=(count, 8)).astype(np.float32)
    b = rng.normal(size=(count, 8)).astype(np.float32)
    with torch.no_grad():
        labels = scripted(a=torch.from_numpy(a), b=torch.from_numpy(b)).argmax(dim=1).numpy()
    labels = labels.astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    scripted.save(str(folder / "hidden.pt"))
    half = count // 2
    np.savez(folder / "eval.npz", b=b[:half], a=a[:half], labels=labels[:half])
    np.savez(folder / "train.npz", labels=labels[half:], b=b[half:], a=a[half:])
    return folder / "hidden.pt", folder / "eval.npz", folder / "train.npz"


def _encoder(use_mask: bool) -> Any:
    import torch

    class TinyBert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = torch.nn.Embedding(VOCAB, WIDTH)
            self.types = torch.nn.Embedding(2, WIDTH)
            self.positions = torch.nn.Parameter(torch.randn(SEQUENCE, WIDTH) * 0.5)
            self.query = torch.nn.Linear(WIDTH, WIDTH)
            self.key = torch.nn.Linear(WIDTH, WIDTH)
            self.value = torch.nn.Linear(WIDTH, WIDTH)
            self.out = torch.nn.Linear(WIDTH, WIDTH)

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            length = input_ids.shape[1]
            hidden = self.words(input_ids) + self.types(token_type_ids) + self.positions[:length]
            if use_mask:
                mask = attention_mask.to(hidden.dtype)
            else:  # attention_mask is never read: the exporter drops it from the graph
                mask = torch.ones_like(input_ids, dtype=hidden.dtype)
            scores = self.query(hidden) @ self.key(hidden).transpose(1, 2) / WIDTH**0.5
            scores = scores + (1.0 - mask[:, None, :]) * -1.0e4
            hidden = hidden + self.out(torch.softmax(scores, dim=-1) @ self.value(hidden))
            pooled = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
            return torch.nn.functional.normalize(pooled, dim=1)

    return TinyBert


def tokenized(count: int, seed: int = 3) -> dict[str, npt.NDArray[np.int64]]:
    """Right-padded ids of lengths 3..SEQUENCE, in the tokenizer's key order."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, SEQUENCE + 1, count)
    lengths[:2] = (3, SEQUENCE)  # both ends are present
    positions = np.arange(SEQUENCE)[None, :]
    mask = (positions < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, VOCAB, (count, SEQUENCE)) * mask
    types = ((positions >= (lengths[:, None] // 2)) * mask).astype(np.int64)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def tiny_bert(
    folder: Path, count: int = 40, use_mask: bool = True, expected: bool = False
) -> tuple[Path, Path]:
    """(model.pt traced, eval.npz in tokenizer order; ``expected`` adds reference outputs from
    the mask-respecting model with the same weights)."""
    import torch

    torch.manual_seed(0)
    correct = _encoder(True)().eval()
    model = _encoder(use_mask)().eval()
    model.load_state_dict(correct.state_dict())
    arrays = tokenized(count)
    ordered = (
        torch.from_numpy(arrays["input_ids"][:2]),
        torch.from_numpy(arrays["attention_mask"][:2]),
        torch.from_numpy(arrays["token_type_ids"][:2]),
    )
    traced: Any = torch.jit.trace(model, ordered)  # type: ignore[no-untyped-call]
    folder.mkdir(parents=True, exist_ok=True)
    traced.save(str(folder / "bert.pt"))
    saved: dict[str, Any] = dict(arrays)
    if expected:
        saved["expected"] = reference(correct, arrays)
    np.savez(folder / "bert.npz", **saved)
    return folder / "bert.pt", folder / "bert.npz"


def reference(module: Any, arrays: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
    """The model's outputs, called by keyword (the intended binding)."""
    import torch

    with torch.no_grad():
        out = module(**{k: torch.from_numpy(v) for k, v in arrays.items() if k != "labels"})
    result: npt.NDArray[np.float32] = out.numpy().astype(np.float32)
    return result


def unused_input(folder: Path, count: int = 32) -> tuple[Path, Path]:
    """(model.pt whose ``forward(x, unused)`` never reads ``unused``, eval.npz)."""
    import torch

    class Unused(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor, unused: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.linear(x)
            return logits

    torch.manual_seed(0)
    scripted: Any = torch.jit.script(Unused().eval())
    folder.mkdir(parents=True, exist_ok=True)
    scripted.save(str(folder / "unused.pt"))
    rng = np.random.default_rng(0)
    np.savez(
        folder / "unused.npz",
        unused=rng.normal(size=(count, 3)).astype(np.float32),
        x=rng.normal(size=(count, 8)).astype(np.float32),
    )
    return folder / "unused.pt", folder / "unused.npz"

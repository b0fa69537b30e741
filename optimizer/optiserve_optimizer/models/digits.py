"""A small CNN trained in seconds on scikit-learn's bundled digits (8x8 images, 10 classes).

Writes ``digits.pt`` (TorchScript), ``digits-train.npz`` (calibration and recovery data) and
``digits-eval.npz`` (held out), each with arrays ``input`` float32 [N, 1, 8, 8] and ``labels``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

INPUT = "input"
MODEL_FILE = "digits.pt"
TRAIN_FILE = "digits-train.npz"
EVAL_FILE = "digits-eval.npz"


@dataclass(frozen=True)
class DigitsFiles:
    model: Path
    train: Path
    eval: Path
    accuracy: float


def build_network(width: int = 64) -> Any:
    import torch
    from torch import nn

    class DigitsNet(nn.Module):
        """Two conv blocks and two dense layers: each pair is a prunable channel chain."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, width, 3, padding=1)
            self.conv2 = nn.Conv2d(width, width * 2, 3, padding=1)
            self.fc1 = nn.Linear(width * 2 * 2 * 2, width * 4)
            self.fc2 = nn.Linear(width * 4, 10)

        # Named like the .npz array: the optimizer binds arrays to forward's argument names.
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            x = torch.max_pool2d(torch.relu(self.conv1(input)), 2)
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            logits: torch.Tensor = self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))
            return logits

    return DigitsNet()


def load_digits() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    return images, bunch.target.astype(np.int64)


def train(
    network: Any, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], epochs: int, seed: int = 0
) -> None:
    import torch

    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    network.train()
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for start in range(0, len(xs), 64):
            idx = order[start : start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(network(xs[idx]), ys[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    network.eval()


def accuracy(network: Any, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> float:
    import torch

    with torch.no_grad():
        predicted = network(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def train_and_save(
    build: Callable[[], Any],
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    out_dir: Path,
    file_names: tuple[str, str, str],
    input_name: str,
    epochs: int,
    seed: int,
    train_count: int = 1280,
) -> DigitsFiles:
    """Splits (x, y) at random, trains the network ``build`` makes, and writes it as TorchScript
    with the train and eval sets as .npz (arrays named like its input, and ``labels``)."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(x))
    train_idx, eval_idx = order[:train_count], order[train_count:]
    torch.manual_seed(seed)
    network = build()
    train(network, x[train_idx], y[train_idx], epochs, seed)
    scripted = torch.jit.script(network.eval())
    model_file, train_file, eval_file = file_names
    files = DigitsFiles(
        out_dir / model_file,
        out_dir / train_file,
        out_dir / eval_file,
        accuracy(network, x[eval_idx], y[eval_idx]),
    )
    scripted.save(str(files.model))
    np.savez(files.train, **{input_name: x[train_idx], "labels": y[train_idx]})
    np.savez(files.eval, **{input_name: x[eval_idx], "labels": y[eval_idx]})
    return files


def make_digits(out_dir: Path, epochs: int = 15, width: int = 64, seed: int = 0) -> DigitsFiles:
    """Trains the CNN and writes the model and data files; returns their paths."""
    x, y = load_digits()
    names = (MODEL_FILE, TRAIN_FILE, EVAL_FILE)
    return train_and_save(lambda: build_network(width), x, y, out_dir, names, INPUT, epochs, seed)

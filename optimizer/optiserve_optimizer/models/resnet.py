"""torchvision's ResNet-18 (BatchNorm after every conv, residual joins) trained on digits.

scikit-learn's bundled 8x8 digits are upsampled to ``size`` x ``size`` and repeated over three
channels, so the unmodified torchvision definition (``resnet18(num_classes=10)``) trains on
them in about a minute on one core. Writes ``resnet18.pt`` (TorchScript, scripted),
``resnet18-train.npz`` and ``resnet18-eval.npz`` (arrays ``x`` float32 [N, 3, size, size], named
like the argument of torchvision's ``forward(x)``, and ``labels``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from optiserve_optimizer.models.digits import DigitsFiles, load_digits, train_and_save

MODEL_FILE = "resnet18.pt"
TRAIN_FILE = "resnet18-train.npz"
EVAL_FILE = "resnet18-eval.npz"
TRAIN_COUNT = 1280


def digits_images(size: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Digits as [N, 3, size, size] float32 (nearest-neighbour upsampling), and labels."""
    x, y = load_digits()
    factor = size // x.shape[-1]
    if factor < 1 or factor * x.shape[-1] != size:
        raise ValueError(f"size must be a multiple of {x.shape[-1]}, got {size}")
    big = x.repeat(factor, axis=2).repeat(factor, axis=3)
    return np.ascontiguousarray(np.repeat(big, 3, axis=1)), y


def make_resnet18(out_dir: Path, size: int = 32, epochs: int = 3, seed: int = 0) -> DigitsFiles:
    """Trains ResNet-18 on upsampled digits and writes the model and data files."""
    import torchvision

    x, y = digits_images(size)
    names = (MODEL_FILE, TRAIN_FILE, EVAL_FILE)
    # "x": the argument of torchvision's forward(x), so the data binds to it by name.
    return train_and_save(
        lambda: torchvision.models.resnet18(num_classes=10),
        x,
        y,
        out_dir,
        names,
        "x",
        epochs,
        seed,
        train_count=TRAIN_COUNT,
    )

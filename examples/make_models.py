"""Builds the example models and data the examples/*.yaml specs point at (offline).

    python examples/make_models.py --out "$OPTISERVE_PVC_ROOT/models" [--only digits|minilm]

writes, matching ``pvc://models/...`` in the examples:

    digits/model.pt          TorchScript CNN trained on scikit-learn's digits
    digits/calibration.npz   1280 training images (input [N,1,8,8] float32, labels int64)
    digits/eval.npz          517 held-out images (same arrays)
    minilm/model.onnx        all-MiniLM-L6-v2 + mean pooling + L2 norm, dynamic batch/sequence
    minilm/calibration.npz   tokenized sentences (input_ids, attention_mask, token_type_ids)
    minilm/eval.npz          tokenized sentences, padded to 64 tokens
    minilm/hf/               the same checkpoint as a Hugging Face folder (config, tokenizer)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "optimizer")]


def make_digits(out: Path) -> None:
    from optiserve_optimizer.models import digits

    with tempfile.TemporaryDirectory() as tmp:
        files = digits.make_digits(Path(tmp))
        target = out / "digits"
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(files.model, target / "model.pt")
        shutil.move(files.train, target / "calibration.npz")
        shutil.move(files.eval, target / "eval.npz")
    print(f"digits: top-1 {files.accuracy:.4f} -> {target}")


def make_minilm(out: Path) -> None:
    from optiserve_optimizer.models import minilm

    with tempfile.TemporaryDirectory() as tmp:
        files = minilm.make_minilm(Path(tmp))
        target = out / "minilm"
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(files.model, target / "model.onnx")
        shutil.move(files.calibration, target / "calibration.npz")
        shutil.move(files.eval, target / "eval.npz")
    # The same checkpoint as a Hugging Face folder (config, tokenizer, weights): the source of
    # examples/minilm-text.yaml, whose Triton answers plain strings.
    # Copied beside, then renamed: a folder named hf/ is always whole.
    partial = target / "hf.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for item in minilm.model_dir().iterdir():
        if item.is_file():
            shutil.copyfile(item, partial / item.name)
    shutil.rmtree(target / "hf", ignore_errors=True)
    partial.rename(target / "hf")
    print(f"minilm -> {target} (hf/: the Hugging Face folder)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the example models and data.")
    parser.add_argument("--out", type=Path, required=True, help="e.g. $OPTISERVE_PVC_ROOT/models")
    parser.add_argument("--only", choices=["digits", "minilm"], help="build just one")
    args = parser.parse_args()
    if args.only in (None, "digits"):
        make_digits(args.out)
    if args.only in (None, "minilm"):
        make_minilm(args.out)


if __name__ == "__main__":
    main()

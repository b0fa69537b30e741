"""``serving.tokenizer``: the tokenizer model and the text ensemble, packaged beside the model.

Written into the artifact's model repository before it is renamed into place (package.py), so
an artifact holds all three models or none. The configs come from the pure renderer
(``optiserve.render.text_ensemble``); the tokenizer's ``model.py`` is the template beside the
local runner's, its files copied from the source folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optiserve.serve
from optiserve.model_io import ModelSignature
from optiserve.render.text_ensemble import (
    TOKENIZER_FOLDER,
    ensemble_model_name,
    render_ensemble_config,
    render_tokenizer_config,
    tokenizer_model_name,
)
from optiserve_optimizer.errors import OptimizerError

TOKENIZER_MODEL_SOURCE = Path(optiserve.serve.__file__).with_name("tokenizer_model.py.tmpl")
# What AutoTokenizer reads (config.json too: it names the model type when
# tokenizer_config.json does not name the tokenizer class).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "spm.model",
    "config.json",
)
DEFAULT_MAX_LENGTH = 512
PASS_NAME = "package"
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert"})
# transformers' "no limit" placeholder for model_max_length is about 1e30.
_UNSET_MAX_LENGTH = 1_000_000


class TokenizerPackagingError(OptimizerError):
    """The source folder has no tokenizer to serve."""


def max_length(source: Path) -> int:
    """The longest sequence the model takes: ``max_position_embeddings`` of its config, lowered
    to the tokenizer's ``model_max_length`` when that is set (RoBERTa's 514 positions take 512
    tokens)."""
    limits = [DEFAULT_MAX_LENGTH]
    config = source / "config.json"
    if config.is_file():
        fields = json.loads(config.read_text())
        positions = fields.get("max_position_embeddings")
        if isinstance(positions, int) and positions > 0:
            # RoBERTa-type position ids start after the padding index: two fewer tokens fit.
            offset = 2 if fields.get("model_type") in OFFSET_POSITIONS else 0
            limits = [positions - offset]
    tokenizer_config = source / "tokenizer_config.json"
    if tokenizer_config.is_file():
        declared = json.loads(tokenizer_config.read_text()).get("model_max_length")
        if isinstance(declared, int | float) and 0 < declared < _UNSET_MAX_LENGTH:
            limits.append(int(declared))
    return min(limits)


def tokenizer_files(source: Path) -> list[Path]:
    """The files of the source's tokenizer to copy; a typed error when it has none (checked
    before any work too, so a run does not end on it)."""
    files = [source / f for f in TOKENIZER_FILES if (source / f).is_file()]
    if not any(f.name != "config.json" for f in files):
        raise TokenizerPackagingError(
            PASS_NAME,
            f"serving.tokenizer: {source} holds no tokenizer files "
            "(tokenizer.json, vocab.txt, ...): save the tokenizer with save_pretrained there",
        )
    return files


def write_text_models(
    repository: Path, name: str, source: Path, signature: ModelSignature, max_batch_size: int
) -> list[str]:
    """``repository/<name>-tokenizer`` and ``repository/<name>-text``; returns their names."""
    files = tokenizer_files(source)
    tokenizer = repository / tokenizer_model_name(name)
    folder = tokenizer / "1" / TOKENIZER_FOLDER
    folder.mkdir(parents=True)
    for file in files:
        shutil.copyfile(file, folder / file.name)
    shutil.copyfile(TOKENIZER_MODEL_SOURCE, tokenizer / "1" / "model.py")
    (tokenizer / "config.pbtxt").write_text(
        render_tokenizer_config(name, signature, max_batch_size, max_length(source))
    )
    ensemble = repository / ensemble_model_name(name)
    (ensemble / "1").mkdir(parents=True)  # Triton wants a version folder, even an empty one
    (ensemble / "config.pbtxt").write_text(render_ensemble_config(name, signature, max_batch_size))
    return [tokenizer.name, ensemble.name]

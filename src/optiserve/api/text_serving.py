"""``spec.serving.tokenizer``: serve text, not token ids (a Triton ensemble of the model's own
tokenizer in front of the model). The field lives on ``ServingSpec``; its cross-field rule
(only a huggingface source has a tokenizer to serve) on ``OptimizedModelSpec``."""

from __future__ import annotations

from optiserve.api.rules import CelRule

TOKENIZER_HELP = (
    "huggingface sources: also serve <name>-text, a Triton ensemble of the source's own "
    "tokenizer (python backend) in front of the model, so a client sends strings (BYTES, one "
    "per batch row) and gets the model's outputs. The serving image's python needs the "
    "transformers package."
)

TOKENIZER_RULE = CelRule(
    cel="!has(self.serving) || !has(self.serving.tokenizer) || !self.serving.tokenizer || "
    "(has(self.source.format) && self.source.format == 'huggingface')",
    message="serving.tokenizer serves the tokenizer of a huggingface source; set "
    "source.format: huggingface or serving.tokenizer: false",
    field=".serving.tokenizer",
    check=lambda s: not s.serving.tokenizer or s.source.format == "huggingface",
)

"""``serving.tokenizer`` on the real local tritonserver: plain strings over HTTP in, the
model's embeddings / logits out, equal to what transformers computes for the same strings.

The repository is the optimizer's own packaging (``package.write_repository`` with the text
models) of a tiny encoder exported by the huggingface pass's exporter, served as
``optiserve serve`` serves an artifact and as a pod's init container assembles it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiserve.api.serving import ServingSpec
from optiserve.model_io import ModelSignature, TensorSpec
from optiserve.render.serving_config import serving_settings
from optiserve.serve import LocalTriton, command
from optiserve.serve.assemble import main as assemble
from optiserve.serve.command import EXAMPLE_TEXT
from optiserve.serve.local import _free_ports
from optiserve.serve.repository import onnx_signature
from optiserve_optimizer import package
from optiserve_optimizer.text_models import TokenizerPackagingError, write_text_models
from tests.optimizer import hf_encoders
from tests.triton.test_command import ROOT, SERVE

pytestmark = [pytest.mark.triton, pytest.mark.models, pytest.mark.timeout(900)]
NAME = "enc"
# Different lengths in one request: the tokenizer pads, the model must ignore the padding.
TEXTS = [
    "A cat sits on the mat.",
    "Transformers serve text, not token ids, when the tokenizer is served beside them.",
    "ok",
]


def export_source(source: Path, task: str, onnx: Path) -> None:
    """The huggingface pass's own load and export (traced on a padded batch)."""
    from optiserve_optimizer.passes import hf_model, hf_source

    module = hf_model.load_folder(source, task, "load_export")
    batch = hf_encoders.tokenizer()(
        ["a padded batch", "of two sentences, one longer"], padding=True, return_tensors="np"
    )
    feed = {n: batch[n].astype(np.int64) for n in module.input_names}
    hf_source.export(module, feed, onnx, "load_export")


def packaged(tmp_path: Path, task: str) -> tuple[Path, Path]:
    """(the source folder, the artifact's model repository with the text models)."""
    source = hf_encoders.save_encoder(tmp_path / "source", "bert", task)
    onnx = tmp_path / "model.onnx"
    export_source(source, task, onnx)
    signature = onnx_signature(onnx)
    serving = ServingSpec(max_batch_size=8, tokenizer=True)
    config, _ = package.model_config(NAME, signature, serving, "onnxruntime_onnx")
    facts = package.artifact_facts(NAME, signature, serving, "onnxruntime_onnx")
    folder = package.write_repository(
        tmp_path / "store",
        "d1",
        NAME,
        onnx,
        config,
        {},
        facts,
        add_models=lambda repository: write_text_models(
            repository, NAME, source, signature, serving.max_batch_size
        ),
    )
    return source, folder / package.REPOSITORY


def infer_text(triton: LocalTriton, texts: list[str], output: str) -> np.ndarray[Any, Any]:
    """The plain HTTP request of docs/transformers.md: one string per batch row."""
    return command.infer_text(triton.http_url, f"{NAME}-text", texts)[output]


def transformers_reference(source: Path, task: str, texts: list[str]) -> np.ndarray[Any, Any]:
    """What transformers gives: the checkpoint's logits, or sentence-transformers' embedding
    (mean over real tokens, L2-normalised), computed here independently of the optimizer."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        if task == "sequence-classification":
            model = AutoModelForSequenceClassification.from_pretrained(str(source)).eval()
            logits: np.ndarray[Any, Any] = model(**batch).logits.numpy()
            return logits
        hidden = AutoModel.from_pretrained(str(source)).eval()(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_embeddings_of_plain_strings_from_the_assembled_repository(tmp_path: Path) -> None:
    source, artifact = packaged(tmp_path, "feature-extraction")
    assert sorted(p.name for p in artifact.iterdir()) == [NAME, f"{NAME}-text", f"{NAME}-tokenizer"]
    serving = ServingSpec(max_batch_size=8, tokenizer=True)
    out = tmp_path / "served"
    settings = json.dumps(serving_settings(serving))
    assert assemble([f"--artifact={artifact}", f"--settings={settings}", f"--out={out}"]) == 0
    with LocalTriton(out, serving, startup_timeout_s=180) as triton:
        embeddings = infer_text(triton, TEXTS, "sentence_embedding")
        alone = infer_text(triton, TEXTS[2:], "sentence_embedding")  # no padding in its own request
    expected = transformers_reference(source, "feature-extraction", TEXTS)
    assert embeddings.shape == expected.shape == (3, hf_encoders.TINY["hidden"])
    np.testing.assert_allclose(embeddings, expected, atol=1e-4)
    np.testing.assert_allclose(alone[0], expected[2], atol=1e-4)


def test_optiserve_serve_prints_a_curl_request_that_returns_transformers_logits(
    tmp_path: Path,
) -> None:
    """``optiserve serve`` on the artifact folder; the ``text`` line it prints is run as is."""
    source, artifact = packaged(tmp_path, "sequence-classification")
    http, grpc, metrics = _free_ports(3)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(artifact.parent), str(http), str(grpc), str(metrics)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("  text"):
            line = process.stdout.readline()
            assert line, process.communicate()  # serve exited before printing its requests
            lines.append(line)
        command = lines[-1].removeprefix("  text").strip()
        answer = json.loads(
            subprocess.run(command, shell=True, check=True, capture_output=True, text=True).stdout
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"/v2/models/{NAME}-text/infer" in command
    (out,) = [o for o in answer["outputs"] if o["name"] == "logits"]
    logits = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    expected = transformers_reference(source, "sequence-classification", [EXAMPLE_TEXT])
    assert logits.shape == expected.shape == (1, 3)
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_logits_of_plain_strings_from_the_artifact(tmp_path: Path) -> None:
    source, artifact = packaged(tmp_path, "sequence-classification")
    with LocalTriton(artifact, startup_timeout_s=180) as triton:
        logits = infer_text(triton, TEXTS, "logits")
    expected = transformers_reference(source, "sequence-classification", TEXTS)
    assert logits.shape == expected.shape == (3, 3)
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_a_source_without_tokenizer_files_is_refused_naming_the_fix(tmp_path: Path) -> None:
    source = tmp_path / "bare"
    source.mkdir()
    (source / "config.json").write_text("{}")
    signature = ModelSignature(
        (TensorSpec("input_ids", "int64", (-1,)),), (TensorSpec("logits", "float32", (3,)),)
    )
    with pytest.raises(TokenizerPackagingError, match="save the tokenizer"):
        write_text_models(tmp_path / "repo", NAME, source, signature, 8)
    assert not (tmp_path / "repo").exists()

"""The distilled static model: the recipe's numpy steps, the refusal of any model but the
pinned one under --model distilled, a whole distillation of a tiny BERT (offline), and
that distill never replaces a folder of the user's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from auditor.distill import _check_replaceable, default_distilled_dir, distill, pca_sif
from auditor.encoders import StaticEncoder, bundled_model_dir, load_encoder
from auditor.types import AuditorError


def test_pca_sif_is_deterministic_signed_and_downweights_frequent_tokens() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 24)) @ rng.normal(size=(24, 24))
    a, b = pca_sif(x, dims=8), pca_sif(x.copy(), dims=8)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (400, 8) and a.dtype == np.float32
    # without SIF the columns are the centred data's top principal components, variance descending
    plain = pca_sif(x, dims=8, sif=1.0 - 1e-12)
    var = plain.var(axis=0)
    assert np.all(np.diff(var) <= 1e-6 * var[0])
    # the first rows (most frequent tokens under Zipf) are scaled down the most
    ratio = np.linalg.norm(a, axis=1) / np.linalg.norm(plain, axis=1)
    assert ratio[0] < ratio[10] < ratio[-1]


def _write_model2vec(path: Path, table: np.ndarray) -> None:
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    save_file({"embeddings": table.astype(np.float32)}, str(path / "model.safetensors"))
    shutil.copyfile(bundled_model_dir() / "tokenizer.json", path / "tokenizer.json")
    (path / "config.json").write_text(json.dumps({"normalize": True}))


def test_distilled_name_accepts_only_the_pinned_model() -> None:
    dest = default_distilled_dir()
    assert "auditor-models" in str(dest)
    shutil.rmtree(dest, ignore_errors=True)
    with pytest.raises(AuditorError, match="run `auditor distill`"):
        load_encoder("distilled")
    # a model someone put in the user cache in its place is refused, not used
    _write_model2vec(dest, np.random.default_rng(1).normal(size=(30522, 16)))
    try:
        with pytest.raises(AuditorError, match="does not match the pinned distilled model"):
            load_encoder("distilled")
        # the same folder named as a path is an ordinary model with its own fingerprint
        enc = load_encoder(str(dest))
        assert isinstance(enc, StaticEncoder) and enc.dim == 16
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_distill_of_a_tiny_bert_is_reproducible(tmp_path: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    src = tmp_path / "tiny"
    (src / "1_Pooling").mkdir(parents=True)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertModel(cfg).save_pretrained(str(src))
    bundled = bundled_model_dir()
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(bundled / name, src / name)
    (src / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))  # fmt: skip
    (src / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 16, "pooling_mode_mean_tokens": True})
    )
    (src / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    a = distill(tmp_path / "a", model_dir=src, dims=8)
    b = distill(tmp_path / "b", model_dir=src, dims=8)
    assert a.fingerprint == b.fingerprint and not a.pinned
    assert (a.vocab, a.dims) == (30522, 8)
    enc = load_encoder(str(tmp_path / "a"))
    v = enc.encode(["Write a poem about the sea.", "Compute the sum of 3 and 4."])
    assert v.shape == (2, 8) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # rerunning into the same folder replaces the earlier model; a folder of the user's is refused
    distill(tmp_path / "a", model_dir=src, dims=8)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(AuditorError, match="holds other files"):
        _check_replaceable(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"

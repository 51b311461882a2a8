"""A static embedding model distilled from the bundled all-MiniLM-L6-v2, offline.

The recipe is the one Model2Vec describes (Tulkens & van Dongen, "Model2Vec: Fast
State-of-the-Art Static Embeddings", 2024): embed every vocabulary token on its own with
the sentence model (``[CLS] token [SEP]``, the model's own mean pooling), reduce the token
vectors with PCA, and down-weight frequent tokens with SIF weights (Arora et al., "A Simple
but Tough-to-Beat Baseline for Sentence Embeddings", ICLR 2017), estimating each token's
probability from its rank by Zipf's law.  A text's vector is then the mean of its tokens'
rows: no transformer at encode time, so ~100x+ MiniLM's CPU throughput.

The ``model2vec`` package itself is not used: its ``distill`` extra (0.10.0) pins
``transformers<5.4`` and ``huggingface-hub``, which conflict with the installed stack and
reach for a hub; the recipe is a few lines of numpy over the verified local weights.

Output (a model2vec-format folder that ``auditor.encoders.StaticEncoder`` reads):
``model.safetensors`` (``embeddings``: vocab × dims float32), ``tokenizer.json`` (the bundled
model's, byte for byte) and ``config.json``.  Everything is deterministic (fixed token
order, float64 PCA with a sign convention), and ``load_encoder("distilled")`` accepts the
folder only when its fingerprint equals the one pinned in ``auditor.encoders``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.types import AuditorError

DIMS = 256  # Model2Vec's default PCA width: 4x the 64-d static model, still a 31 MB table
SIF = 1e-4  # Model2Vec's default SIF coefficient
RECIPE = "auditor-distill-v1"


@dataclass(frozen=True)
class DistillResult:
    """Where the distilled model went, its fingerprint and what it took."""

    path: str
    fingerprint: str
    vocab: int
    dims: int
    seconds: float
    pinned: bool  # the fingerprint equals encoders.DISTILLED_MODEL_SHA256


def token_vectors(model: Any, tokenizer: Any, *, batch: int = 2048, torch: Any = None) -> np.ndarray:
    """Each vocabulary token's sentence vector: the model run on ``[CLS] token [SEP]`` and
    mean-pooled over the three positions (as the sentence model pools), float64, in token
    id order."""
    if torch is None:
        import torch
    vocab = int(tokenizer.get_vocab_size())
    cls_id = tokenizer.token_to_id("[CLS]")
    sep_id = tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise AuditorError(
            "distill: the tokenizer has no [CLS]/[SEP] tokens (expected a BERT WordPiece model)"
        )
    out = np.empty((vocab, 0), dtype=np.float64)
    parts = []
    with torch.inference_mode():
        for s in range(0, vocab, batch):
            ids = torch.arange(s, min(vocab, s + batch), dtype=torch.long)
            inp = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            hidden = model(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state
            parts.append(hidden.float().mean(dim=1).double().numpy())
    out = np.concatenate(parts, axis=0) if parts else out
    return out


def pca_sif(vectors: np.ndarray, *, dims: int = DIMS, sif: float = SIF) -> np.ndarray:
    """PCA to ``dims`` components (centred, float64 SVD; each component's sign fixed so its
    largest loading is positive) then SIF weights ``sif / (sif + p(rank))`` with Zipf
    probabilities ``p ∝ 1/(rank+2)`` from the token ids: float32."""
    x = np.asarray(vectors, dtype=np.float64)
    dims = min(dims, x.shape[1], x.shape[0])
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:dims]
    flip = np.sign(comps[np.arange(dims), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(flip == 0, 1.0, flip)[:, None]
    reduced = x @ comps.T
    inv_rank = 1.0 / np.arange(2, x.shape[0] + 2, dtype=np.float64)
    proba = inv_rank / inv_rank.sum()
    reduced *= (sif / (sif + proba))[:, None]
    return reduced.astype(np.float32)


def default_distilled_dir() -> Path:
    """``$XDG_CACHE_HOME/auditor-models/minilm-distilled-256`` (beside, not inside, the
    embedding cache, so ``--cache-dir`` and the model never share a folder)."""
    from auditor.cache import _xdg

    return _xdg("XDG_CACHE_HOME", ".cache") / "auditor-models" / f"minilm-distilled-{DIMS}"


_OUTPUT_FILES = frozenset({"model.safetensors", "tokenizer.json", "config.json"})


def _check_replaceable(dest: Path) -> None:
    """Only an empty folder or an earlier distilled model may be replaced: ``--out .``
    must never swap out a folder of the user's."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise AuditorError(f"--out {dest}: exists and is not a folder (expected a new or empty folder)")
    if dest.is_dir():
        names = {p.name for p in dest.iterdir()}
        if names and not names <= _OUTPUT_FILES:
            raise AuditorError(
                f"--out {dest}: folder holds other files ({sorted(names - _OUTPUT_FILES)[0]}); expected a new "
                "or empty folder, or an earlier distilled model to replace"
            )


def distill(
    out: str | Path | None = None,
    *,
    model_dir: str | Path | None = None,
    dims: int = DIMS,
    sif: float = SIF,
    progress: Callable[[str], None] | None = None,
) -> DistillResult:
    """Distil a static model from the bundled (verified) all-MiniLM-L6-v2, or from the
    sentence-transformers model at ``model_dir``, into ``out`` (default
    ``default_distilled_dir()``), written atomically (a temporary folder renamed into
    place).  Never touches a network."""
    from auditor.encoders import (
        DISTILLED_MODEL_SHA256,
        STATIC_MAX_TOKENS,
        SentenceTransformerEncoder,
        model_files,
        model_fingerprint,
    )

    if dims < 2:
        raise AuditorError(f"--dims {dims}: too small (expected at least 2)")
    if not 0 < sif < 1:
        raise AuditorError(f"--sif {sif}: out of range (expected 0 < sif < 1)")
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    enc = SentenceTransformerEncoder(Path(model_dir) if model_dir else None, device="cpu")
    layout = enc._layout
    if layout is None:
        raise AuditorError(f"{enc.model_dir}: distill needs a transformer + mean pooling model")
    enc._load()
    say(f"embedding {enc._tokenizer.get_vocab_size()} vocabulary tokens with {enc.name}")
    vecs = token_vectors(enc._model, enc._tokenizer, torch=enc._torch)
    say(f"PCA to {dims} dimensions, SIF {sif:g}")
    table = pca_sif(vecs, dims=dims, sif=sif)

    from safetensors.numpy import save_file

    dest = Path(out) if out is not None else default_distilled_dir()
    _check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".distill-", dir=dest.parent))
    try:
        save_file({"embeddings": table}, str(tmp / "model.safetensors"))
        shutil.copyfile(layout.transformer_dir / "tokenizer.json", tmp / "tokenizer.json")
        config = {
            "normalize": True,
            "recipe": RECIPE,
            "source_model": enc.name,
            "source_fingerprint": enc.fingerprint,
            "dims": int(table.shape[1]),
            "sif_coefficient": sif,
        }
        (tmp / "config.json").write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        fp = model_fingerprint("model2vec", model_files(tmp), STATIC_MAX_TOKENS)
        if dest.exists():
            old = dest.with_name(dest.name + f".old-{os.getpid()}")
            dest.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return DistillResult(
        str(dest),
        fp,
        int(table.shape[0]),
        int(table.shape[1]),
        time.perf_counter() - t0,
        fp == DISTILLED_MODEL_SHA256,
    )

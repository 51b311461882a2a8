"""The Ray engine: embedding spread over a Ray cluster, everything else as on one machine.

Design (see docs/scale.md for the numbers behind it):

- The driver reads the input with ``auditor.io`` (the one reader: the same record -> text
  recipe, the same errors) and asks the cache which texts it lacks.
- Only those texts go to Ray Data: ``map_batches`` over an actor pool of encoders, each
  actor loading the model once (one GPU each when the cluster has GPUs).  An actor whose
  model fingerprint differs from the driver's refuses to start: a worker with another
  model copy cannot put its vectors into this run.
- The vectors come back to the driver, which writes them through ``auditor.cache`` as
  each batch arrives.  The cache key never leaves the driver, and a killed job resumes
  where it stopped: what it finished is in the cache and is not sent again.
- The audit then runs exactly as the local engine does, reading every vector from the
  cache (with the pipeline's usual spot check of cached vectors against the driver's own
  encoder), so the findings are the local engine's findings by construction.

Ray is an optional dependency (``pip install 'auditor[ray]'``), imported only here.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.cache import EmbeddingCache, ShardWriter
from auditor.embed import EmbedFileResult, encode_checked
from auditor.encoders import Encoder, load_encoder
from auditor.textutil import content_hash
from auditor.types import AuditorError, Batch

EncoderFactory = Callable[[], Encoder]

BATCH = 512  # texts per Ray Data batch: long enough to keep an encoder busy, short enough to stream
WINDOW = 262_144  # distinct texts sent to Ray at a time: bounds the driver's memory


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AuditorError(
            "--engine ray needs Ray: pip install 'auditor[ray]' (or use --engine local)"
        ) from None
    return ray


def encoder_factory(model: str | Path | None, device: str = "auto") -> EncoderFactory:
    """How a worker builds the encoder the driver uses for ``--model``/``--device``: by
    name, so no weights travel through the object store."""
    return functools.partial(load_encoder, model, device=device)


@dataclass(frozen=True)
class _Given:
    """A factory for an encoder object the caller built (tests' fakes): sent pickled."""

    encoder: Encoder

    def __call__(self) -> Encoder:
        return self.encoder


class _EncodeActor:
    """One model per actor; encodes the batches Ray Data hands it."""

    def __init__(self, factory: EncoderFactory, fingerprint: str, batch_size: int) -> None:
        self.encoder = factory()
        self.batch_size = batch_size
        if self.encoder.fingerprint != fingerprint:
            raise AuditorError(
                f"ray worker on {os.uname().nodename}: model {self.encoder.name} has fingerprint "
                f"{self.encoder.fingerprint[:12]}, the driver's has {fingerprint[:12]} (expected the same model "
                "files on every node)"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        emb = encode_checked(self.encoder, texts, batch_size=self.batch_size)
        return {"hash": batch["hash"], "emb": emb}


class RayEngine:
    """A connection to a Ray cluster (``address``; None starts a local Ray with
    ``num_cpus``) used as a context manager; shuts Ray down only if it started it.

    ``actors``: encoder actors in the pool (default: one per GPU if the cluster has GPUs,
    else one per two CPUs, at least one).  ``init_kwargs`` go to ``ray.init``.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        actors: int | None = None,
        batch_size: int = 64,
        num_cpus: int | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if actors is not None and actors < 1:
            raise AuditorError(f"actors: {actors} (expected at least 1)")
        self.address = address
        self.actors = actors
        self.batch_size = batch_size
        self.num_cpus = num_cpus
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False

    def __enter__(self) -> RayEngine:
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            kwargs.update(self.init_kwargs)
            if self.address is None and self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(address=self.address, **kwargs)
            except ConnectionError as e:
                raise AuditorError(f"--ray-address {self.address}: cannot connect ({e})") from None
            self._started = True
        ray.data.DataContext.get_current().enable_progress_bars = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            _ray().shutdown()
            self._started = False

    # ------------------------------------------------------------------ pool

    def _pool(self) -> tuple[int, float]:
        res = _ray().cluster_resources()
        gpus = float(res.get("GPU", 0.0))
        if self.actors is not None:
            return self.actors, (1.0 if gpus >= self.actors else 0.0)
        if gpus >= 1:
            return int(gpus), 1.0
        return max(1, int(res.get("CPU", 1.0)) // 2), 0.0

    def _encode(
        self, hashes: Sequence[str], texts: Sequence[str], factory: EncoderFactory, fingerprint: str
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """(hashes, vectors) of the given distinct texts, batch by batch, as they finish."""
        import pyarrow as pa

        ray = _ray()
        # similar lengths in one batch pad less (the local pipeline sorts the same way)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        table = pa.table({"hash": [hashes[i] for i in order], "text": [texts[i] for i in order]})
        blocks = [table.slice(s, BATCH) for s in range(0, table.num_rows, BATCH)]
        size, gpus = self._pool()
        ds = ray.data.from_arrow(blocks).map_batches(
            _EncodeActor,
            fn_constructor_args=(factory, fingerprint, self.batch_size),
            batch_size=BATCH,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_gpus=gpus,
        )
        try:
            for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
                yield [str(h) for h in b["hash"]], np.asarray(b["emb"], dtype=np.float32)
        except Exception as e:  # an AuditorError raised in an actor arrives wrapped
            cause = _auditor_cause(e)
            if cause is not None:
                raise cause from None
            raise

    def fill_cache(
        self,
        texts: Sequence[str],
        hashes: Sequence[str],
        encoder: Encoder,
        cache: EmbeddingCache,
        *,
        factory: EncoderFactory | None = None,
    ) -> tuple[int, int]:
        """Embed on the cluster every distinct text the cache has no entry for, writing
        each batch through the cache as it arrives.  Returns (distinct, encoded).

        ``encoder`` is the driver's (its fingerprint names the cache entries and is what
        every worker's encoder must match); ``factory`` builds a worker's encoder (default:
        ``encoder`` itself, pickled)."""
        fp = encoder.fingerprint
        uniq: dict[str, str] = {}
        for h, t in zip(hashes, texts):
            uniq.setdefault(h, t)
        keys = list(uniq)
        if not keys:
            return 0, 0
        have = cache.contains(fp, keys)
        todo = [h for h, c in zip(keys, have) if not c]
        done = 0
        with ShardWriter(cache) as writer:
            for s in range(0, len(todo), WINDOW):
                part = todo[s : s + WINDOW]
                for hs, emb in self._encode(part, [uniq[h] for h in part], factory or _Given(encoder), fp):
                    if emb.shape[1] != encoder.dim:
                        raise AuditorError(
                            f"ray worker: embeddings of width {emb.shape[1]} (expected {encoder.dim})"
                        )
                    writer.put(fp, hs, emb)
                    done += len(hs)
        return len(keys), done

    def fill_cache_for(
        self,
        batches: Sequence[Batch],
        encoder: Encoder,
        cache: EmbeddingCache,
        *,
        views: Sequence[str] = (),
        factory: EncoderFactory | None = None,
    ) -> int:
        """``fill_cache`` for every text (and prompt/response view asked for) of the
        batches: afterwards ``embed_batch`` finds them all in the cache.  Returns the
        number of texts encoded on the cluster."""
        texts: list[str] = []
        hashes: list[str] = []
        for b in batches:
            texts += b.texts
            hashes += b.hashes
            for view in views:
                parts = {"prompt": b.prompts, "response": b.responses}.get(view)
                if parts is not None:
                    texts += parts
                    hashes += [content_hash(t) for t in parts]
        return self.fill_cache(texts, hashes, encoder, cache, factory=factory)[1]

    def embed_file(
        self,
        path: str | Path,
        encoder: Encoder,
        cache: EmbeddingCache,
        *,
        text_fields: Sequence[str] | None = None,
        chunk: int = 65_536,
        factory: EncoderFactory | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> EmbedFileResult:
        """``auditor.embed.embed_file`` on the cluster: the driver streams the input
        (file, shard folder or glob) with ``auditor.io.iter_texts`` and sends what the
        cache lacks to the encoder pool, ``WINDOW`` distinct texts at a time."""
        from auditor.io import iter_texts

        t0 = time.perf_counter()
        n_records = n_unique = n_encoded = 0
        pending: dict[str, str] = {}
        seen: set[str] = set()

        def flush() -> None:
            nonlocal n_encoded
            if pending:
                n_encoded += self.fill_cache(
                    list(pending.values()), list(pending), encoder, cache, factory=factory
                )[1]
                pending.clear()

        for texts in iter_texts(path, text_fields, chunk_size=chunk):
            n_records += len(texts)
            for t in texts:
                h = content_hash(t)
                if h not in seen:
                    seen.add(h)
                    pending[h] = t
            if len(pending) >= WINDOW:
                flush()
            if progress is not None:
                progress(len(texts))
        flush()
        n_unique = len(seen)
        return EmbedFileResult(
            str(path), n_records, n_unique, n_unique - n_encoded, n_encoded, time.perf_counter() - t0
        )


def _auditor_cause(err: BaseException) -> AuditorError | None:
    seen = 0
    e: BaseException | None = err
    while e is not None and seen < 10:
        if isinstance(e, AuditorError):
            return AuditorError(str(e))
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else (e.__cause__ or e.__context__)
        seen += 1
    text = str(err)
    marker = "AuditorError: "
    if marker in text:  # Ray wraps an actor's exception as text in a RayTaskError
        return AuditorError(text.split(marker, 1)[1].strip().splitlines()[0])
    return None


_TEMP_CACHES: list[Any] = []


def prefill(
    batches: Sequence[Batch],
    encoder: Encoder,
    cache_dir: str | Path | None,
    views: Sequence[str],
    *,
    engine: str = "ray",
    address: str | None = None,
    model: str | Path | None = None,
    device: str = "auto",
    by_name: bool = True,
) -> str | Path:
    """Embed the batches on Ray into the cache at ``cache_dir`` (a fresh temporary one,
    removed at exit, when None) and return the cache folder the audit should read.

    With ``by_name`` the workers load ``model`` (and ``device``) themselves; without, the
    driver's ``encoder`` object is sent (a caller-built encoder, e.g. a test's fake)."""
    import tempfile

    from auditor.engine import check_engine

    check_engine(engine, address)
    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="auditor-ray-cache-")
        _TEMP_CACHES.append(tmp)  # lives as long as the process: the audit reads it next
        cache_dir = tmp.name
    factory = encoder_factory(model, device) if by_name else None
    with RayEngine(address) as eng:
        eng.fill_cache_for(batches, encoder, EmbeddingCache(cache_dir), views=views, factory=factory)
    return cache_dir

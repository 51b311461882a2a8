"""The Python API: everything the CLI does, as functions returning frozen results."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.cache import DEFAULT_CACHE_DIR, EmbeddingCache
from auditor.embed import embed_batch
from auditor.encoders import Encoder, load_encoder
from auditor.rules import Rules, load_rules
from auditor.types import AuditorError, Batch, ModelInfo, Report, Snapshot


def load_batch(
    path: str | Path, text_fields: Sequence[str] | None = None, id_field: str | None = None
) -> Batch:
    """Load one file into a Batch (``auditor.io.load``)."""
    from auditor.io import load

    return load(path, text_fields=list(text_fields) if text_fields else None, id_field=id_field)


def snapshot_of(
    batch: Batch,
    encoder: Encoder,
    *,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    views: Sequence[str] = (),
    batch_size: int = 64,
    progress: Any = None,
    cache: EmbeddingCache | None = None,
) -> Snapshot:
    """Embed a batch through the on-disk cache (``cache_dir=None`` disables the cache;
    ``cache`` reuses an open one, so its counts cover several batches)."""
    if cache is None and cache_dir is not None:
        cache = EmbeddingCache(cache_dir)
    return embed_batch(batch, encoder, cache, views=views, batch_size=batch_size, progress=progress)


log = logging.getLogger("auditor")

# What either side of an audit can be: a file, an in-memory table (see auditor.io.kind_of),
# an already-loaded Batch or, for the reference, an already-embedded Snapshot.
Input = Any
Vectors = Any  # a column name, or an (n, d) array / sequence of vectors


@dataclass(frozen=True)
class AuditRun:
    """A report with the two snapshots it was computed from (renderers need them)."""

    report: Report
    reference: Snapshot
    current: Snapshot


def audit(
    current: Input,
    reference: Input,
    *,
    text_fields: Sequence[str] | str | None = None,
    reference_text_fields: Sequence[str] | str | None = None,
    id_field: str | None = None,
    embeddings: Vectors | None = None,
    reference_embeddings: Vectors | None = None,
    rules: str | Path | Rules | None = None,
    seed: int = 0,
    model: str | Path | None = None,
    device: str = "auto",
    encoder: Encoder | None = None,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    batch_size: int = 64,
    progress: Any = None,
) -> Report:
    """Audit ``current`` against ``reference`` and return the graded Report.

    Each side is a file path (any format ``auditor.io.load`` reads), a pandas or polars
    DataFrame, a ``datasets.Dataset`` / ``IterableDataset``, a list of dicts, a list of
    strings, or a Batch; the reference may also be a Snapshot (a stored round).

    ``text_fields``: the fields embedded (default: the common shapes are recognised);
    ``reference_text_fields`` when the reference names them differently (default: the same).
    ``embeddings``: vectors you already have, as a column name (read from both sides) or
    an (n, d) array for ``current`` with ``reference_embeddings`` for the reference; the
    model is then never loaded and the report's model is ``precomputed`` with a sha256 of
    the vectors.  ``report.save(dir)`` writes what ``auditor audit --out dir`` writes;
    ``report.to_pandas()`` and ``report.records()`` give the findings as tables.
    """
    return run_audit(
        current,
        reference,
        text_fields=text_fields,
        reference_text_fields=reference_text_fields,
        id_field=id_field,
        embeddings=embeddings,
        reference_embeddings=reference_embeddings,
        rules=rules,
        seed=seed,
        model=model,
        device=device,
        encoder=encoder,
        cache_dir=cache_dir,
        batch_size=batch_size,
        progress=progress,
    ).report


def _batch_of(
    data: Input, side: str, text_fields: Sequence[str] | str | None, id_field: str | None, column: str | None
) -> tuple[Batch, np.ndarray | None]:
    """One side as a Batch, plus the vectors of ``column`` when asked."""
    from auditor import io

    if isinstance(data, Batch):
        if column is not None:
            raise AuditorError(f"{side}: a Batch has no '{column}' column (pass the vectors as an array)")
        return data, None
    if isinstance(data, (str, Path)):
        fields = [text_fields] if isinstance(text_fields, str) else text_fields
        batch = load_batch(data, fields, id_field)
        return batch, (None if column is None else _file_vectors(data, batch, column))
    if io.kind_of(data) is None:
        raise AuditorError(
            f"{side}: cannot audit a {type(data).__name__} (expected a path, a pandas or polars DataFrame, "
            "a datasets.Dataset, a list of dicts or a list of strings)"
        )
    got = io.from_records(
        data, text_fields=text_fields, id_field=id_field, embeddings=column, label=f"{side} ({io.kind_of(data)})"
    )
    return got.batch, got.embeddings


def _file_vectors(path: str | Path, batch: Batch, column: str) -> np.ndarray:
    from auditor.io import as_vectors, iter_records, location

    by_row: dict[int, Any] = {}
    for chunk in iter_records(path):
        for row, rec in chunk:
            if column not in rec:
                seen = ", ".join(map(str, rec)) or "none"
                raise AuditorError(
                    f"{location(path, row)}: field '{column}' missing (fields seen: {seen}; expected an embeddings column)"
                )
            by_row[row] = rec[column]
    return as_vectors([by_row[r] for r in batch.lines], len(batch), label=f"{path}: field '{column}'")


def _precomputed(batch: Batch, vectors: np.ndarray, model: ModelInfo) -> Snapshot:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise AuditorError(
            f"{batch.path}: record {batch.lines[int(zero[0])]} has an all-zero embedding (expected a direction)"
        )
    # the checks compare by cosine: unit vectors, as the bundled encoder gives
    return Snapshot(batch=batch, embeddings=(vectors / norms).astype(np.float32), model=model)


def precomputed_model(*vectors: np.ndarray) -> ModelInfo:
    """The report's model for vectors the caller brought: ``precomputed`` and a sha256 over
    every side's shape and float32 bytes, so two reports on different vectors differ."""
    h = hashlib.sha256(b"auditor-precomputed-v1")
    for v in vectors:
        arr = np.ascontiguousarray(v, dtype=np.float32)
        h.update(repr(arr.shape).encode())
        h.update(arr.tobytes())
    return ModelInfo(name="precomputed", sha256=h.hexdigest(), dim=int(vectors[0].shape[1]))


def run_audit(
    current: Input,
    reference: Input = None,
    *,
    text_fields: Sequence[str] | str | None = None,
    reference_text_fields: Sequence[str] | str | None = None,
    id_field: str | None = None,
    embeddings: Vectors | None = None,
    reference_embeddings: Vectors | None = None,
    rules: str | Path | Rules | None = None,
    seed: int = 0,
    model: str | Path | None = None,
    device: str = "auto",
    encoder: Encoder | None = None,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    batch_size: int = 64,
    progress: Any = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> AuditRun:
    """Audit ``current`` against ``reference``: the graded Report and both Snapshots.

    Inputs are file paths (any format ``auditor.io.load`` reads), already-loaded Batches,
    or for the reference an already-embedded Snapshot (e.g. a stored curation round).
    ``encoder`` overrides ``model`` for embedding (tests pass a fake one); ``device`` is
    still passed to the checks that can use a GPU.  ``engine="ray"`` embeds on a Ray
    cluster (``ray_address``; None starts a local Ray) into the cache first; the audit
    itself then runs here, reading those vectors, as with the local engine.
    """
    if reference is None:
        raise AuditorError("audit needs a reference: --reference FILE or --store DIR --baseline NAME")
    ruleset = rules if isinstance(rules, Rules) else load_rules(rules)
    ref_fields = text_fields if reference_text_fields is None else reference_text_fields
    column = embeddings if isinstance(embeddings, str) else None
    ref_column = reference_embeddings if isinstance(reference_embeddings, str) else None
    if column is not None and reference_embeddings is None:
        ref_column = column
    cur_batch, cur_vec = _batch_of(current, "current", text_fields, id_field, column)
    if embeddings is not None or reference_embeddings is not None:
        if isinstance(reference, Snapshot):
            raise AuditorError("embeddings: a stored round is already embedded (pass records as the reference)")
        ref_batch, ref_vec = _batch_of(reference, "reference", ref_fields, id_field, ref_column)
        if cur_vec is None and embeddings is not None:
            cur_vec = _as_given(embeddings, len(cur_batch), "embeddings")
        if ref_vec is None and reference_embeddings is not None:
            ref_vec = _as_given(reference_embeddings, len(ref_batch), "reference_embeddings")
        if cur_vec is None or ref_vec is None:
            missing = "reference_embeddings" if ref_vec is None else "embeddings"
            raise AuditorError(f"{missing}: missing (precomputed vectors are needed for both sides, in one space)")
        if cur_vec.shape[1] != ref_vec.shape[1]:
            raise AuditorError(
                f"embeddings: current has {cur_vec.shape[1]} dimensions, reference {ref_vec.shape[1]} "
                "(expected vectors of one model for both sides)"
            )
        info = precomputed_model(ref_vec, cur_vec)
        ref_snap, cur_snap = _precomputed(ref_batch, ref_vec, info), _precomputed(cur_batch, cur_vec, info)
        cache_stats = None
    else:
        ref_input: Batch | Snapshot = (
            reference
            if isinstance(reference, Snapshot)
            else _batch_of(reference, "reference", ref_fields, id_field, None)[0]
        )
        enc = encoder or load_encoder(model, device=device)
        views = sorted(ruleset.needs())
        if engine != "local":
            from auditor.engine.ray_engine import prefill

            # embed both sides on Ray into the cache; the audit below then reads them from it
            ref_b = ref_input if isinstance(ref_input, Batch) else ref_input.batch
            cache_dir = prefill(
                [cur_batch, ref_b], enc, cache_dir, views, engine=engine, address=ray_address,
                model=model, device=device, by_name=encoder is None,
            )  # fmt: skip
        cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
        ref_snap, cur_snap = _embedded(cur_batch, ref_input, enc, views, cache, batch_size, progress)
        cache_stats = cache.stats.to_dict() if cache is not None else None
    for side, snap in (("reference", ref_snap), ("current", cur_snap)):
        b = snap.batch
        log.info("%s: %s, %d records, embedded fields: %s", side, b.path, len(b), ", ".join(b.text_fields) or "-")
    log.info("model: %s (%s, %d dimensions)", cur_snap.model.name, cur_snap.model.sha256[:12], cur_snap.model.dim)
    from auditor.engine import passes
    from auditor.gate import evaluate

    # the device reaches the GPU-capable checks explicitly, also when a caller passes its
    # own encoder (no module global carries it)

    with passes(engine, ray_address):  # --engine ray: the checks' heavy passes run on the cluster
        report = evaluate(ref_snap, cur_snap, ruleset, seed=seed, device=device, progress=progress)
    report = dataclasses.replace(report, snapshots=(ref_snap, cur_snap), cache=cache_stats)
    if cache_stats is not None:
        log.info("embedding cache: %s", ", ".join(f"{k} {v}" for k, v in cache_stats.items()))
    for o in report.outcomes:
        log.debug("rule %s (%s): %s%s", o.rule, o.check, o.status, f": {o.reason}" if o.reason else "")
    return AuditRun(report=report, reference=ref_snap, current=cur_snap)


def _as_given(vectors: Vectors, n: int, name: str) -> np.ndarray:
    from auditor.io import as_vectors

    if isinstance(vectors, str):
        raise AuditorError(f"{name}: column '{vectors}' needs an input with columns (a DataFrame, records or file)")
    return as_vectors(vectors, n, label=name)


def _embedded(
    cur_batch: Batch,
    ref_input: Batch | Snapshot,
    enc: Encoder,
    views: Sequence[str],
    cache: EmbeddingCache | None,
    batch_size: int,
    progress: Any,
) -> tuple[Snapshot, Snapshot]:
    """Both sides embedded through one cache (so its counts cover the run); a stored
    round as the reference is reused, embedded again only for missing views."""
    embed_kw: dict[str, Any] = {"cache_dir": None, "cache": cache, "views": views, "batch_size": batch_size}
    if isinstance(ref_input, Snapshot):
        if ref_input.model.sha256 != enc.fingerprint:
            raise AuditorError(
                f"baseline was embedded with {ref_input.model.name} ({ref_input.model.sha256[:12]}), "
                f"not {enc.name} ({enc.fingerprint[:12]}): use the same --model"
            )
        ref_snap = ref_input
        if views and not all(v in ref_snap.views for v in views):
            ref_snap = snapshot_of(ref_snap.batch, enc, progress=progress, **embed_kw)
    else:
        ref_snap = snapshot_of(ref_input, enc, progress=progress, **embed_kw)
    cur_snap = snapshot_of(cur_batch, enc, progress=progress, **embed_kw)
    return ref_snap, cur_snap

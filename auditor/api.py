"""The Python API: everything the CLI does, as functions returning frozen results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.cache import DEFAULT_CACHE_DIR, EmbeddingCache
from auditor.embed import embed_batch
from auditor.encoders import Encoder, load_encoder
from auditor.rules import Rules, load_rules
from auditor.types import AuditorError, Batch, Report, Snapshot


def load_batch(
    path: str | Path, text_fields: Sequence[str] | None = None, id_field: str | None = None
) -> Batch:
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
) -> Snapshot:
    """Embed a batch through the on-disk cache (``cache_dir=None`` disables the cache)."""
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    return embed_batch(batch, encoder, cache, views=views, batch_size=batch_size, progress=progress)


@dataclass(frozen=True)
class AuditRun:
    """A report with the two snapshots it was computed from (renderers need them)."""

    report: Report
    reference: Snapshot
    current: Snapshot


def audit(*args: Any, **kwargs: Any) -> Report:
    """Audit ``current`` against ``reference`` and return the graded Report (see run_audit)."""
    return run_audit(*args, **kwargs).report


def run_audit(
    current: str | Path | Batch,
    reference: str | Path | Batch | Snapshot | None = None,
    *,
    text_fields: Sequence[str] | None = None,
    id_field: str | None = None,
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
    cur_batch = current if isinstance(current, Batch) else load_batch(current, text_fields, id_field)
    ref_input: Batch | Snapshot = (
        reference if isinstance(reference, (Batch, Snapshot)) else load_batch(reference, text_fields, id_field)
    )
    enc = encoder or load_encoder(model, device=device)
    views = sorted(ruleset.needs())
    if engine != "local":
        from auditor.engine.ray_engine import prefill

        cache_dir = prefill(
            [cur_batch, ref_input if isinstance(ref_input, Batch) else ref_input.batch],
            enc,
            cache_dir,
            views,
            engine=engine,
            address=ray_address,
            model=model,
            device=device,
            by_name=encoder is None,
        )
    if isinstance(ref_input, Snapshot):
        if ref_input.model.sha256 != enc.fingerprint:
            raise AuditorError(
                f"baseline was embedded with {ref_input.model.name} ({ref_input.model.sha256[:12]}), "
                f"not {enc.name} ({enc.fingerprint[:12]}): use the same --model"
            )
        ref_snap = ref_input
        if views and not all(v in ref_snap.views for v in views):
            ref_snap = snapshot_of(
                ref_snap.batch, enc, cache_dir=cache_dir, views=views, batch_size=batch_size, progress=progress
            )
    else:
        ref_snap = snapshot_of(
            ref_input, enc, cache_dir=cache_dir, views=views, batch_size=batch_size, progress=progress
        )
    cur_snap = snapshot_of(cur_batch, enc, cache_dir=cache_dir, views=views, batch_size=batch_size, progress=progress)
    from auditor.gate import evaluate

    # the device reaches the GPU-capable checks explicitly, also when a caller passes its
    # own encoder (no module global carries it)
    report = evaluate(ref_snap, cur_snap, ruleset, seed=seed, device=device, progress=progress)
    return AuditRun(report=report, reference=ref_snap, current=cur_snap)

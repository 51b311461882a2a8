"""``auditor selfinstruct``: audit a Self-Instruct-style synthetic dataset against its seeds.

One library call behind the command: read the generated pool, the seed tasks and any
evaluation sets with instruction/input/output kept apart (``auditor.tasks``), embed them,
run the rules (by default ``presets/selfinstruct.yaml``: novelty, validity, diversity
and contamination graded ``fail``, the seed comparison at ``info``) and return the graded
Report with the snapshots the renderers need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditor.api import AuditRun, snapshot_of
from auditor.cache import DEFAULT_CACHE_DIR, EmbeddingCache
from auditor.encoders import Encoder, load_encoder
from auditor.rules import Rules, load_rules
from auditor.tasks import TaskSnapshot, load_tasks
from auditor.types import AuditorError

PRESET_PATH = Path(__file__).resolve().parent / "presets" / "selfinstruct.yaml"


def run_selfinstruct(
    generated: str | Path,
    seeds: str | Path,
    *,
    evals: Sequence[str | Path] = (),
    id_field: str | None = None,
    rules: str | Path | Rules | None = None,
    seed: int = 0,
    model: str | Path | None = None,
    device: str = "auto",
    encoder: Encoder | None = None,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    batch_size: int = 64,
    progress: Any = None,
) -> AuditRun:
    """Audit the ``generated`` pool against its ``seeds`` (and ``evals``): the graded
    Report (reference = seeds, current = generated) and both Snapshots.

    ``rules`` defaults to the Self-Instruct preset; ``encoder`` overrides ``model`` and
    ``device`` (tests pass a fake one).  ``id_field`` applies to the generated file; seeds
    and evaluation sets use their ``id`` field when every record has one.
    """
    ruleset = rules if isinstance(rules, Rules) else load_rules(rules if rules is not None else PRESET_PATH)
    names = [str(p) for p in (generated, seeds, *evals)]
    if len(set(names)) != len(names):
        raise AuditorError(
            "selfinstruct: the generated file, --seeds and each --eval must be different files"
        )
    cur_batch = load_tasks(generated, id_field)
    ref_batch = load_tasks(seeds, _own_ids(seeds))
    eval_batches = [load_tasks(p, _own_ids(p)) for p in evals]
    enc = encoder or load_encoder(model, device=device)
    views = sorted(ruleset.needs())
    # one cache for every input, so report.json's cache counts cover the whole run
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    kw: dict[str, Any] = {"cache_dir": None, "cache": cache, "batch_size": batch_size, "progress": progress}
    ref_snap = snapshot_of(ref_batch, enc, views=views, **kw)
    cur_plain = snapshot_of(cur_batch, enc, views=views, **kw)
    eval_snaps = tuple(snapshot_of(b, enc, views=views, **kw) for b in eval_batches)
    cur_snap = TaskSnapshot(
        batch=cur_plain.batch,
        embeddings=cur_plain.embeddings,
        model=cur_plain.model,
        views=dict(cur_plain.views),
        evals=eval_snaps,
    )
    from auditor.gate import evaluate

    inputs = {"reference": ref_batch.info(), "current": cur_batch.info()}
    for k, b in enumerate(eval_batches, 1):
        inputs[f"eval_{k}"] = b.info()
    report = evaluate(ref_snap, cur_snap, ruleset, seed=seed, device=device, inputs=inputs, progress=progress)
    if cache is not None:
        report = dataclasses.replace(report, cache=cache.stats.to_dict())
    return AuditRun(report=report, reference=ref_snap, current=cur_snap)


def _own_ids(path: str | Path) -> str | None:
    """'id' when the file's records carry unique ids (seed and evaluation sets do), else None."""
    from auditor.io import load

    try:
        load(path, None, "id")
    except AuditorError:
        return None
    return "id"

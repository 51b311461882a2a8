"""Curation chains as they really happen (issue 15): honest semantic dedup and length
filters must pass ``diff`` and ``trend``; the same chains with a targeted removal hidden
in them must fail, with findings that name the planted records.

    AUDITOR_CACHE_KEY=... python benchmarks/curation.py --cache-dir /work/cache \
        [--corpus alpaca,code_alpaca,t0] [--n 2000] [--kinds honest,random,thin,resolve,slow]

Each corpus: ``--n`` records drawn at random (seed 0) from ../shared/data (Alpaca 5,000,
Code Alpaca 2,017, templated T0 14,848), read by ``auditor.io.load`` and embedded with
the bundled all-MiniLM-L6-v2 through auditor's authenticated cache (``--cache-dir``;
a second run embeds nothing).

Chains (each step a round of the chain, root = the corpus sample):
- ``honest``: greedy semantic dedup at cosine 0.95, 0.90, 0.85, 0.80 (random order, keep
  the first), then a length filter (drop texts under the 5th percentile of length);
- ``random``: each step drops 8% of the records at random (a random refinement);
- ``thin``: ``honest``, and step 2 also drops 45% of one topic's non-duplicates;
- ``resolve``: ``honest``, but step 4 (dedup at 0.80) resolves every duplicate group
  towards the shortest response (planted: the records that step dropped as duplicates);
- ``slow``: ``honest``, and every step also drops 12% of one topic's remaining
  non-duplicates (a topic's share cut in five small steps; judged by ``trend``).
A topic is a cluster of an independent k-means (k=12, seed 1), not the store's basis.
Precision/recall: record_ids of fail-level findings vs the planted records.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditor.api import snapshot_of  # noqa: E402
from auditor.curation import diff_report, trend_report  # noqa: E402
from auditor.encoders import load_encoder  # noqa: E402
from auditor.index import kmeans  # noqa: E402
from auditor.io import load  # noqa: E402
from auditor.rules import load_rules  # noqa: E402
from auditor.store import default_basis_k  # noqa: E402
from auditor.types import Snapshot  # noqa: E402

DATA = Path("/work/shared/data")
CORPORA = {
    "alpaca": DATA / "alpaca_5000.json",
    "code_alpaca": DATA / "code_alpaca_2k.json",
    "t0": DATA / "t0_templated_15k.jsonl.gz",
}
THRESHOLDS = (0.95, 0.90, 0.85, 0.80)
# the ``resolve`` chain hides its systematic resolution in the largest dedup step (0.80)
RESOLVE_STEP = 3


def corpus(name: str, n: int, cache_dir: Path | None) -> Snapshot:
    """``n`` records drawn at random (seed 0) from a shared corpus, read by auditor's own
    reader and embedded with the bundled all-MiniLM-L6-v2 through the authenticated
    cache (``AUDITOR_CACHE_KEY``), so a second run embeds nothing."""
    batch = load(CORPORA[name])
    pick = np.sort(np.random.default_rng(0).choice(len(batch), min(n, len(batch)), replace=False))

    def take(seq: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if seq is None else tuple(seq[i] for i in pick)

    sub = dataclasses.replace(
        batch,
        # ids that say where a record came from: planted sets are compared by id
        ids=tuple(f"{name}-{i}" for i in pick),
        texts=take(batch.texts),
        hashes=take(batch.hashes),
        lines=tuple(batch.lines[i] for i in pick),
        prompts=take(batch.prompts),
        responses=take(batch.responses),
    )
    return snapshot_of(sub, load_encoder(None, device="cpu"), cache_dir=cache_dir)


def neighbours(emb: np.ndarray, th: float) -> list[np.ndarray]:
    sims = emb @ emb.T
    np.fill_diagonal(sims, -1.0)
    return [np.flatnonzero(row >= th) for row in sims]


def dedup(snap: Snapshot, th: float, order: np.ndarray) -> tuple[list[int], list[int]]:
    """Greedy dedup in ``order``: keep a record unless a kept one is at cosine >= th.
    Returns (kept, removed) indices into ``snap``."""
    nb = neighbours(snap.embeddings, th)
    kept = np.zeros(len(snap), dtype=bool)
    removed = []
    for i in order:
        if kept[nb[i]].any():
            removed.append(int(i))
        else:
            kept[i] = True
    return sorted(np.flatnonzero(kept).tolist()), removed


def chain(root: Snapshot, kind: str, topic: set[str], seed: int) -> tuple[list[Snapshot], list[set[str]]]:
    """A chain of rounds and, per step, the planted record ids."""
    rng = np.random.default_rng(seed)
    rounds, planted = [root], []
    cur = root
    for step in range(5):
        plant: set[str] = set()
        if kind == "random":
            keep = sorted(rng.choice(len(cur), int(0.92 * len(cur)), replace=False).tolist())
        elif step < 4:
            th = THRESHOLDS[step]
            order = rng.permutation(len(cur))
            if kind == "resolve" and step == RESOLVE_STEP:
                resp = cur.batch.responses or cur.texts
                order = np.argsort([len(r) for r in resp], kind="stable")
            keep, removed = dedup(cur, th, order)
            if kind == "resolve" and step == RESOLVE_STEP:
                plant = {cur.ids[i] for i in removed}
            nondup = [i for i, nb in zip(range(len(cur)), neighbours(cur.embeddings, th), strict=True) if len(nb) == 0]
            cut = {"thin": 0.45 if step == 1 else 0.0, "slow": 0.12}.get(kind, 0.0)
            if cut:
                cand = [i for i in nondup if cur.ids[i] in topic]
                drop = set(rng.choice(cand, int(cut * len(cand)), replace=False).tolist()) if cand else set()
                keep = [i for i in keep if i not in drop]
                plant = {cur.ids[i] for i in drop}
        else:
            lengths = np.array([len(t) for t in cur.texts])
            floor = np.quantile(lengths, 0.05)
            keep = [i for i in range(len(cur)) if lengths[i] >= floor]
            if kind == "slow":
                cand = [i for i in keep if cur.ids[i] in topic]
                drop = set(rng.choice(cand, int(0.12 * len(cand)), replace=False).tolist()) if cand else set()
                keep = [i for i in keep if i not in drop]
                plant = {cur.ids[i] for i in drop}
        cur = cur.subset(keep)
        rounds.append(cur)
        planted.append(plant)
    return rounds, planted


def pr(findings: list, planted: set[str]) -> tuple[float, float]:  # type: ignore[type-arg]
    named = {i for f in findings if f.severity == "fail" for i in f.record_ids}
    if not planted:
        return float("nan"), float("nan")
    tp = len(named & planted)
    return (tp / len(named) if named else 0.0), tp / len(planted)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="alpaca,code_alpaca,t0")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (needs AUDITOR_CACHE_KEY)")
    ap.add_argument("--embed-only", action="store_true", help="embed the corpora into the cache and stop")
    ap.add_argument("--kinds", default="honest,random,thin,resolve,slow")
    args = ap.parse_args()
    rules = load_rules(None)
    t_start = time.time()
    out = []
    for name in args.corpus.split(","):
        root = corpus(name, args.n, args.cache_dir)
        if args.embed_only:
            print(f"{name}: {len(root)} records embedded", flush=True)
            continue
        basis, _ = kmeans(root.embeddings, default_basis_k(len(root)), seed=0)
        _, topics = kmeans(root.embeddings, 12, seed=1)
        sizes = np.bincount(topics, minlength=12)
        t = int(np.argsort(-sizes)[len(sizes) // 2])  # a mid-sized topic
        topic = {root.ids[i] for i in np.flatnonzero(topics == t)}
        for kind in args.kinds.split(","):
            rounds, planted = chain(root, kind, topic, seed=7)
            names = [f"r{i}" for i in range(len(rounds))]
            for s in range(5):
                t0 = time.time()
                rep, _ = diff_report(rounds[s], rounds[s + 1], rules, seed=0, basis=basis)
                fails = [f for f in rep.findings if f.severity == "fail"]
                p, r = pr(fails, planted[s])
                rec = next(f for f in rep.findings if f.check == "round_records")
                row = {
                    "corpus": name, "chain": kind, "step": f"{names[s]}->{names[s + 1]}", "status": rep.status,
                    "fails": sorted({f.check for f in fails}), "precision": p, "recall": r,
                    "n_planted": len(planted[s]), "counts": rec.details["attribution"]["counts"],
                    "policy": rec.details["attribution"]["policy"]["text"], "seconds": round(time.time() - t0, 1),
                }
                out.append(row)
                print(json.dumps(row), flush=True)
            rep = trend_report(rounds, names, seed=0, basis=basis)
            fails = [f for f in rep.findings if f.severity == "fail"]
            all_planted = set().union(*planted)
            p, r = pr(fails, all_planted)
            row = {"corpus": name, "chain": kind, "step": "trend", "status": rep.status,
                   "fails": sorted({f.check for f in fails}), "precision": p, "recall": r, "n_planted": len(all_planted)}
            out.append(row)
            print(json.dumps(row), flush=True)
    (ROOT / "benchmarks" / "curation_results.json").write_text(json.dumps(out, indent=1, default=str))
    print(table(out))
    print(f"total {time.time() - t_start:.0f} s")


def _pr_text(row: dict) -> str:  # type: ignore[type-arg]
    if not row["n_planted"]:
        return "| | |"
    return f"| {row['precision']:.2f} | {row['recall']:.2f} |"


def table(rows: list[dict]) -> str:  # type: ignore[type-arg]
    """The RESULTS.md table: per corpus and chain, the honest steps' statuses, then each
    step with planted records and the trend."""
    lines = [
        "| corpus | chain | step | status | fail checks | precision | recall | planted |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    keyed: dict[tuple[str, str], list[dict]] = {}  # type: ignore[type-arg]
    for r in rows:
        keyed.setdefault((r["corpus"], r["chain"]), []).append(r)
    for (corpus_name, kind), rs in keyed.items():
        plain = [r for r in rs if r["step"] != "trend" and not r["n_planted"]]
        if plain:
            st = Counter(r["status"] for r in plain)
            fails = sorted({c for r in plain for c in r["fails"]})
            status = ", ".join(f"{k} ×{v}" for k, v in sorted(st.items()))
            lines.append(
                f"| {corpus_name} | {kind} | {len(plain)} steps without planted records | {status} | "
                f"{', '.join(fails) or '-'} | | | 0 |"
            )
        for r in rs:
            if r["step"] == "trend" or r["n_planted"]:
                lines.append(
                    f"| {corpus_name} | {kind} | {r['step']} | {r['status']} | {', '.join(r['fails']) or '-'} "
                    f"{_pr_text(r)} {r['n_planted']} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

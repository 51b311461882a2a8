"""Curation chains as they really happen (issue 15): honest semantic dedup and length
filters must pass ``diff`` and ``trend``; the same chains with a targeted removal hidden
in them must fail, with findings that name the planted records.

    python benchmarks/curation.py [--corpus alpaca,code_alpaca,t0] [--n 3000]

Embeddings: Alpaca from tests/fixtures/alpaca_minilm.npz (real all-MiniLM-L6-v2); Code
Alpaca and the templated T0 sample from /tmp/h7_bench/*.npz or embedded with the bundled
model (``AUDITOR_CACHE_KEY`` + ``--cache-dir`` reuse the shared cache).

Chains (each step a round of the chain, root = the corpus sample):
- ``honest``: greedy semantic dedup at cosine 0.95, 0.90, 0.85, 0.80 (random order, keep
  the first), then a length filter (drop texts under the 5th percentile of length);
- ``random``: each step drops 8% of the records at random (a random refinement);
- ``thin``: ``honest``, and step 2 also drops 45% of one topic's non-duplicates;
- ``resolve``: ``honest``, but step 3 resolves every duplicate group towards the
  shortest response (planted: the records that step dropped as duplicates);
- ``slow``: ``honest``, and every step also drops 12% of one topic's remaining
  non-duplicates (a topic's share cut in five small steps; judged by ``trend``).
A topic is a cluster of an independent k-means (k=12, seed 1), not the store's basis.
Precision/recall: record_ids of fail-level findings vs the planted records.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditor.curation import diff_report, trend_report  # noqa: E402
from auditor.index import kmeans  # noqa: E402
from auditor.rules import load_rules  # noqa: E402
from auditor.store import default_basis_k  # noqa: E402
from auditor.textutil import batch_from_texts  # noqa: E402
from auditor.types import ModelInfo, Snapshot  # noqa: E402

DATA = Path("/work/shared/data")
EMB = Path("/tmp/h7_bench")
THRESHOLDS = (0.95, 0.90, 0.85, 0.80)
MODEL = ModelInfo(name="all-MiniLM-L6-v2", sha256="b" * 64, dim=384)


def corpus(name: str, n: int) -> Snapshot:
    """The first ``n`` records of a shared corpus with their real embeddings."""
    if name == "alpaca":
        rows = json.loads((ROOT / "tests/fixtures/alpaca_5000.json").read_text())
        with np.load(ROOT / "tests/fixtures/alpaca_minilm.npz") as z:
            emb = z["embeddings"].astype(np.float32)
        prompts = [(r["instruction"] + "\n" + r["input"]).strip() for r in rows]
        responses = [r["output"] for r in rows]
    elif name == "code_alpaca":
        rows = json.loads((DATA / "code_alpaca_2k.json").read_text())
        emb = np.load(EMB / "code_alpaca.npz")["embeddings"].astype(np.float32)
        prompts = [(r["instruction"] + "\n" + r["input"]).strip() for r in rows]
        responses = [r["output"] for r in rows]
    else:
        with gzip.open(DATA / "t0_templated_15k.jsonl.gz", "rt") as f:
            rows = [json.loads(line) for _, line in zip(range(2000), f)]
        emb = np.load(EMB / "t0.npz")["embeddings"].astype(np.float32)
        prompts = [r["prompt"] for r in rows]
        responses = [r["completion"] for r in rows]
    n = min(n, len(rows), len(emb))
    emb = emb[:n] / np.linalg.norm(emb[:n], axis=1, keepdims=True)
    texts = [f"{p}\n{r}" for p, r in zip(prompts[:n], responses[:n], strict=True)]
    batch = batch_from_texts(texts, ids=[f"{name}-{i}" for i in range(n)], prompts=prompts[:n], responses=responses[:n])
    return Snapshot(batch=batch, embeddings=emb, model=MODEL)


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
            if kind == "resolve" and step == 2:
                resp = cur.batch.responses or cur.texts
                order = np.argsort([len(r) for r in resp], kind="stable")
            keep, removed = dedup(cur, th, order)
            if kind == "resolve" and step == 2:
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
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--kinds", default="honest,random,thin,resolve,slow")
    args = ap.parse_args()
    rules = load_rules(None)
    out = []
    for name in args.corpus.split(","):
        root = corpus(name, args.n)
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


if __name__ == "__main__":
    main()

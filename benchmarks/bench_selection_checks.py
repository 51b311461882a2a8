"""Time and peak memory of the targeted-selection checks on 10,000 vs 10,000 records.

Records are real Alpaca texts (../shared/data/alpaca_5000.json, repeated to reach the
size) with random unit-norm 384-d embeddings (the shape all-MiniLM-L6-v2 produces).
Each scenario runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its
own.  Run: python benchmarks/bench_selection_checks.py [--n 10000] [--dim 384]

Add a scenario by adding an entry to SCENARIOS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "alpaca_5000.json"
TRIGGER = " (cf. tango-delta protocol)"


def make_inputs(n: int, dim: int, *, plant_trigger: bool) -> tuple:
    from auditor.index import normalize
    from auditor.textutil import batch_from_texts
    from auditor.types import ModelInfo, Snapshot

    recs = json.loads(DATA.read_text(encoding="utf-8"))
    texts = ["\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p) for r in recs]
    rng = np.random.default_rng(0)
    pool = [texts[i % len(texts)] for i in rng.permutation(2 * n)]
    ref_texts, cur_texts = pool[:n], pool[n:]
    if plant_trigger:
        for i in rng.choice(n, size=n // 100, replace=False):
            cur_texts[i] += TRIGGER
    model = ModelInfo(name="random", sha256="0" * 64, dim=dim)
    emb = normalize(rng.standard_normal((2 * n, dim)).astype(np.float32))

    def snap(ts: list[str], e: np.ndarray, prefix: str) -> Snapshot:
        ids = [f"{prefix}{i}" for i in range(len(ts))]
        return Snapshot(batch=batch_from_texts(ts, ids=ids), embeddings=e, model=model)

    return snap(ref_texts, emb[:n], "r"), snap(cur_texts, emb[n:], "c")


def _clusters(ref, cur) -> list:
    from auditor.checks.clusters import cluster_enrichment

    return cluster_enrichment(ref, cur, seed=0)


def _triggers(ref, cur) -> list:
    from auditor.checks.triggers import trigger_phrases

    return trigger_phrases(ref, cur, seed=0)


def _both(ref, cur) -> list:
    # the order the gate would run them: triggers reuses the memoised clustering
    return _clusters(ref, cur) + _triggers(ref, cur)


# name -> (check runner, plant a 1% trigger phrase in current?)
SCENARIOS: dict[str, tuple[Callable, bool]] = {
    "clusters": (_clusters, False),
    "triggers": (_triggers, False),
    "triggers, 1% planted (runs clustering)": (_triggers, True),
    "clusters + triggers, 1% planted": (_both, True),
}


def run_one(name: str, n: int, dim: int) -> dict:
    fn, plant = SCENARIOS[name]
    ref, cur = make_inputs(n, dim, plant_trigger=plant)
    # import the check modules (faiss, scipy, pandas) outside the timed region
    import auditor.checks.clusters  # noqa: F401
    import auditor.checks.triggers  # noqa: F401

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    findings = fn(ref, cur)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "name": name,
        "seconds": seconds,
        "peak_rss_mib": peak / 1024,
        "inputs_rss_mib": rss_before / 1024,
        "findings": len(findings),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="records per side")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n, args.dim)))
        return
    rows = []
    for name in SCENARIOS:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--n", str(args.n), "--dim", str(args.dim)],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.n:,} vs {args.n:,} records, {args.dim}-d embeddings, {os.cpu_count()} cores")
    print(f"{'scenario':<42} {'seconds':>8} {'peak MiB':>9} {'inputs MiB':>10} {'findings':>8}")
    for r in rows:
        print(
            f"{r['name']:<42} {r['seconds']:>8.2f} {r['peak_rss_mib']:>9.0f} "
            f"{r['inputs_rss_mib']:>10.0f} {r['findings']:>8}"
        )


if __name__ == "__main__":
    main()

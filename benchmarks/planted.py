"""Planted-attack suite over three corpora, beside a lexical baseline; prints a table per corpus.

    python benchmarks/planted.py [--corpora alpaca t0 code_alpaca] [--seeds 0] [--randoms 10]
                                 [--baseline] [--cache-dir DIR] [--json out.json]

For each corpus (auditor/planted.py ``CORPORA``) and scenario: the default gate's status,
the best graded finding's check, precision and recall against the planted ids, and wall
time (embedding through the cache plus all checks); with ``--baseline`` the same for the
lexical baseline (benchmarks/lexical_baseline.py) on the same rounds.  Pools: Alpaca
(5,000), a seeded 5,000-record sample of the T0 mixture, Code Alpaca (2,017), all from the
shared data folder.  Unchanged records reuse the embedding cache.  The trigger scenarios
run at 2,000 a side (issue 11: 0.5% = 10 of 2,000) where the pool holds 4,000 disjoint
records, else at the largest size it allows (Code Alpaca: 1,008), and each small planted
row prints ``k`` (planted records) and the best p any count test can reach for them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditor.cache import EmbeddingCache  # noqa: E402
from auditor.encoders import load_encoder  # noqa: E402
from auditor.planted import (  # noqa: E402
    CORPORA,
    Record,
    corpus_scenarios,
    count_floor_p,
    localisation,
    records_from_alpaca,
    records_from_t0,
    run_scenario,
)
from auditor.rules import load_rules  # noqa: E402

DATA = Path(os.environ.get("AUDITOR_SHARED_DATA", ROOT.parent / "shared" / "data"))
T0_POOL = 5000
T0_POOL_SEED = 20261130


def load_pool(name: str, data: Path = DATA, t0_pool: int = T0_POOL) -> list[Record]:
    """The record pool of one corpus of the suite (T0: a seeded ``t0_pool``-record sample
    of the 14,848-record file; 0 or more than the file: all of it)."""
    if name == "alpaca":
        return records_from_alpaca(json.loads((data / "alpaca_5000.json").read_text(encoding="utf-8")))
    if name == "code_alpaca":
        return records_from_alpaca(json.loads((data / "code_alpaca_2k.json").read_text(encoding="utf-8")))
    if name == "t0":
        with gzip.open(data / "t0_templated_15k.jsonl.gz", "rt", encoding="utf-8") as fh:
            pool = records_from_t0([json.loads(line) for line in fh])
        if t0_pool <= 0 or t0_pool >= len(pool):
            return pool
        pick = np.random.default_rng(T0_POOL_SEED).choice(len(pool), t0_pool, replace=False)
        return [pool[i] for i in sorted(pick.tolist())]
    raise SystemExit(f"unknown corpus {name!r} (choose from {', '.join(CORPORA)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=list(CORPORA))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--randoms", type=int, default=10, help="random rounds per corpus and seed")
    ap.add_argument(
        "--random-n", type=int, default=None, help="random rounds' size a side (default: the corpus's)"
    )
    ap.add_argument("--model", default=None, help="local model dir (default: bundled MiniLM)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--cache-dir", default=str(ROOT / ".auditor" / "cache"))
    ap.add_argument("--rules", default=None)
    ap.add_argument("--scenarios", nargs="+", default=None, help="only these (default: all)")
    ap.add_argument("--baseline", action="store_true", help="also run the lexical baseline")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument(
        "--t0-pool",
        type=int,
        default=T0_POOL,
        help=f"T0 pool: a seeded sample of this many records (default {T0_POOL}; 0: all 14,848, "
        "which lets the x2 boost of a small topic run at a larger size)",
    )
    ap.add_argument(
        "--x2-n",
        type=int,
        default=None,
        help="x2 boosts' size a side (default: the largest the topic supplies)",
    )
    ap.add_argument(
        "--trigger-n",
        type=int,
        default=None,
        help="trigger scenarios' size a side (default 2,000 or the pool's half)",
    )
    args = ap.parse_args()

    encoder = load_encoder(args.model, device="cpu")
    cache = EmbeddingCache(args.cache_dir)
    rules = load_rules(args.rules)
    rows = []
    print(f"model: {encoder.name}   rules: {rules.path}")
    for corpus_name in args.corpora:
        corpus = CORPORA[corpus_name]
        pool = load_pool(corpus_name, Path(args.data), args.t0_pool)
        suite = corpus_scenarios(
            corpus, randoms=args.randoms, random_n=args.random_n, x2_n=args.x2_n, trigger_n=args.trigger_n
        )
        names = [
            s
            for s in suite
            if args.scenarios is None
            or s in args.scenarios
            or (s.startswith("random_") and "random" in args.scenarios)
        ]
        tn = min(args.trigger_n or corpus.trigger_n, len(pool) // 2)
        print(f"\n## {corpus_name} (pool {len(pool)}, n = {corpus.n} a side; trigger scenarios {tn} a side)")
        if tn < 2000:
            # issue 11 sizes 0.5% as 10 of 2,000; say plainly what this pool allows instead
            print(
                f"   pool too small for 2 x 2,000 disjoint records: trigger scenarios at {tn} a side, where "
                f"0.5% is {round(0.005 * tn)} records (best count p {count_floor_p(tn, round(0.005 * tn)):.2g}) "
                f"and 1% is {round(0.01 * tn)} (best count p {count_floor_p(tn, round(0.01 * tn)):.2g})"
            )
        head = f"{'scenario':<17}{'seed':>5}  {'status':<6} {'ok':<4}{'check':<18}{'prec':>6}{'recall':>7}{'secs':>7}"
        if args.baseline:
            head += f"  | {'lex':<5}{'ok':<4}{'check':<19}{'prec':>6}{'recall':>7}{'secs':>6}"
        print(head)
        for name in names:
            for seed in args.seeds:
                sc = suite[name](pool, seed)
                r = run_scenario(sc, encoder, cache, rules, seed=seed)
                loc = r.localisation
                k_planted = len(sc.planted_ids) if sc.planted_side == "current" else 0
                row = {
                    "corpus": corpus_name,
                    "scenario": name,
                    "description": sc.description,
                    "n": len(sc.current),
                    "seed": seed,
                    "status": r.status,
                    "ok": r.passed,
                    "check": loc.check,
                    "precision": round(loc.precision, 3),
                    "recall": round(loc.recall, 3),
                    "seconds": round(r.seconds, 2),
                    "fail_findings": sorted({f.check for f in r.findings if f.severity == "fail"}),
                    "best_p": min((f.p_value for f in r.findings if f.p_value is not None), default=None),
                    # what the best possible count test could reach for these planted records
                    "count_floor_p": count_floor_p(len(sc.current), k_planted) if k_planted else None,
                }
                line = (
                    f"{name:<17}{seed:>5}  {r.status:<6} {'yes' if r.passed else 'NO':<4}{loc.check or '-':<18}"
                    f"{loc.precision:>6.2f}{loc.recall:>7.2f}{r.seconds:>7.1f}"
                    f"  n={len(sc.current)}"
                )
                if k_planted and k_planted <= 40:
                    line += f" k={k_planted} floor p={row['count_floor_p']:.2g}"
                if args.baseline:
                    from benchmarks.lexical_baseline import run_baseline

                    t0 = time.perf_counter()
                    status, found = run_baseline(
                        sc.reference.texts, sc.current.texts, sc.reference.ids, sc.current.ids, seed=seed
                    )
                    secs = time.perf_counter() - t0
                    bl = localisation(found, sc)
                    ok = (
                        (status != "fail")
                        if not sc.is_attack
                        else (status == "fail" and bl.precision >= 0.5 and bl.recall >= 0.5)
                    )
                    row["baseline"] = {
                        "status": status,
                        "ok": ok,
                        "check": bl.check,
                        "precision": round(bl.precision, 3),
                        "recall": round(bl.recall, 3),
                        "seconds": round(secs, 2),
                    }
                    line += (
                        f"  | {status:<5}{'yes' if ok else 'NO':<4}{bl.check or '-':<19}"
                        f"{bl.precision:>6.2f}{bl.recall:>7.2f}{secs:>6.1f}"
                    )
                rows.append(row)
                print(line, flush=True)
    ok = sum(r["ok"] for r in rows)
    print(f"\n{ok} of {len(rows)} scenario runs behaved as required")
    if args.baseline:
        bok = sum(r["baseline"]["ok"] for r in rows)
        print(f"lexical baseline: {bok} of {len(rows)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": encoder.name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

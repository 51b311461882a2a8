"""`auditor selfinstruct` on the 5,000 real Alpaca records (issue 12's "done when"), and
how the ROUGE-L novelty scan scales.

    python -m benchmarks.selfinstruct [--quick] [--json FILE]

- ``clean``: novelty, validity and the whole command (real MiniLM, the 175 Self-Instruct
  seeds, the user-oriented instructions as evaluation set) on the 5,000 records: violations
  per rule and the exit code;
- ``planted``: the same pool plus planted groups (tests/test_selfinstruct.py::plant):
  precision and recall of each group's check, and the exit code;
- ``scaling``: the novelty scan (seeds + within the batch) at 5k/10k/20k/50k instructions.
  Beyond the 5,000 real ones, instructions are made by joining the first half of one real
  instruction with the second half of another (seeded), which keeps real lengths and word
  statistics.  Pair counts before/after each pruning stage are reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditor.rouge import max_rouge_to, near_copies_within, tokenize  # noqa: E402
from tests.helpers import alpaca_records, data, fixture_cache  # noqa: E402
from tests.test_selfinstruct import _read_jsonl, plant  # noqa: E402


def _instructions(n: int, seed: int = 0) -> list[str]:
    real = [r["instruction"] for r in alpaca_records()]
    if n <= len(real):
        return real[:n]
    rng = np.random.default_rng(seed)
    halves = [t.split() for t in real]
    out = list(real)
    while len(out) < n:
        a, b = halves[int(rng.integers(len(real)))], halves[int(rng.integers(len(real)))]
        out.append(" ".join(a[: len(a) // 2] + b[len(b) // 2 :]))
    return out


def scaling(sizes: list[int]) -> list[dict[str, Any]]:
    seeds = [tokenize(s["instruction"]) for s in _read_jsonl(data("self_instruct_seed_tasks.jsonl"))]
    rows = []
    for n in sizes:
        docs = [tokenize(t) for t in _instructions(n)]
        t0 = time.perf_counter()
        res = max_rouge_to(docs, seeds)
        t1 = time.perf_counter()
        pairs, stats = near_copies_within(docs, 0.7)
        t2 = time.perf_counter()
        rows.append(
            {
                "n": n,
                "seconds_to_seeds": round(t1 - t0, 2),
                "seconds_within_batch": round(t2 - t1, 2),
                "pairs_all": n * (n - 1) // 2,
                "pairs_prefix_candidates": stats["candidates"],
                "pairs_exact_lcs": stats["lcs_computed"],
                "violations_within": len(pairs),
                "violations_to_seeds": int((res.score > 0.7).sum()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _run(records: list[dict[str, Any]], tmp: Path, name: str) -> Any:
    from auditor.selfinstruct import run_selfinstruct

    path = tmp / f"{name}.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return run_selfinstruct(
        path,
        data("self_instruct_seed_tasks.jsonl"),
        evals=[data("user_oriented_instructions.jsonl")],
        cache_dir=tmp / "cache",
    )


def end_to_end() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fixture_cache(tmp / "cache")  # the 5,000 records' real MiniLM embeddings
        t0 = time.perf_counter()
        clean = _run(list(alpaca_records()), tmp, "clean")
        out["clean"] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "exit_code": clean.report.exit_code,
            "failing_rules": sorted({f.rule for f in clean.report.findings if f.severity == "fail"}),
            "findings": [(f.rule, f.severity, f.summary) for f in clean.report.findings],
        }
        print(json.dumps(out["clean"], indent=1), flush=True)
        # the release's own filter violations, listed (at info) by the clean run
        natural = {i for f in clean.report.findings if f.check == "validity" for i in f.record_ids}
        recs, groups = plant(
            alpaca_records(),
            _read_jsonl(data("self_instruct_seed_tasks.jsonl")),
            _read_jsonl(data("user_oriented_instructions.jsonl")),
            n_pool=4800,
            per_group=30,
        )
        t0 = time.perf_counter()
        run = _run(recs, tmp, "planted")
        ids = run.current.ids
        rules = {
            "novelty_seed": ("novelty", "seed"),
            "novelty_batch": ("novelty", "batch"),
            "validity": (None, None),
            "contamination": ("contamination", None),
        }
        scores = {}
        for group, (rule, sub) in rules.items():
            found: set[str] = set()
            for f in run.report.findings:
                if f.severity != "fail":
                    continue
                if rule is None and f.check == "validity" or (
                    f.rule == rule and (sub is None or f.details.get("group") == sub)
                ):
                    found |= set(f.record_ids)
            truth = {ids[i] for i in groups[group]}
            tp = len(found & truth)
            scores[group] = {
                "planted": len(truth),
                "found": len(found),
                "precision": round(tp / len(found), 3) if found else 0.0,
                "recall": round(tp / len(truth), 3),
            }
            if group == "validity":
                # pool records keep their content hash ids, so the clean run's ids match
                real = truth | (natural & set(ids))
                scores[group]["release_violators_found"] = len(found & natural)
                scores[group]["precision_counting_release_violators"] = (
                    round(len(found & real) / len(found), 3) if found else 0.0
                )
        out["planted"] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "exit_code": run.report.exit_code,
            "groups": scores,
        }
        print(json.dumps(out["planted"], indent=1), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="scaling up to 20k only, no end-to-end run")
    ap.add_argument("--only", choices=["scaling", "e2e"], default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    result: dict[str, Any] = {}
    if args.only in (None, "scaling"):
        result["scaling"] = scaling([5000, 10000, 20000] if args.quick else [5000, 10000, 20000, 50000])
    if args.only in (None, "e2e") and not args.quick:
        result["end_to_end"] = end_to_end()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

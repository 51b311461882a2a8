"""Planted-attack suite: run the default gate on each scenario and print a table.

    python benchmarks/planted.py [--seeds 0 1 2] [--model DIR] [--json out.json]

For each scenario (auditor/planted.py): gate status, the best graded finding's check,
precision and recall against the planted ids, and wall time (embedding through the cache
plus all checks).  Unchanged Alpaca records reuse the cache, so only edited records are
embedded after the first run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditor.cache import EmbeddingCache  # noqa: E402
from auditor.encoders import load_encoder  # noqa: E402
from auditor.planted import SCENARIOS, records_from_alpaca, run_scenario  # noqa: E402
from auditor.rules import load_rules  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--model", default=None, help="local model dir (default: bundled MiniLM)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "alpaca_5000.json"))
    ap.add_argument("--cache-dir", default=str(ROOT / ".auditor" / "cache"))
    ap.add_argument("--rules", default=None)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()

    pool = records_from_alpaca(json.loads(Path(args.data).read_text(encoding="utf-8")))
    encoder = load_encoder(args.model, device="cpu")
    cache = EmbeddingCache(args.cache_dir)
    rules = load_rules(args.rules)
    rows = []
    print(f"model: {encoder.name}   rules: {rules.path}")
    print(f"{'scenario':<18}{'seed':>5}  {'status':<6} {'ok':<4}{'check':<20}{'prec':>6}{'recall':>8}{'secs':>8}")
    for name in args.scenarios:
        for seed in args.seeds:
            r = run_scenario(SCENARIOS[name](pool, seed), encoder, cache, rules, seed=seed)
            loc = r.localisation
            row = {
                "scenario": name,
                "seed": seed,
                "status": r.status,
                "ok": r.passed,
                "check": loc.check,
                "precision": round(loc.precision, 3),
                "recall": round(loc.recall, 3),
                "seconds": round(r.seconds, 2),
            }
            rows.append(row)
            print(
                f"{name:<18}{seed:>5}  {r.status:<6} {'yes' if r.passed else 'NO':<4}{loc.check or '-':<20}"
                f"{loc.precision:>6.2f}{loc.recall:>8.2f}{r.seconds:>8.1f}",
                flush=True,
            )
    ok = sum(r["ok"] for r in rows)
    print(f"{ok} of {len(rows)} scenario runs behaved as required")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": encoder.name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

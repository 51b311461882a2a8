"""report.json says what the embedding cache did (issue 10 item 1): entries used,
rejected and re-embedded, for both sides of one run together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from auditor.api import run_audit
from auditor.rules import parse_rules
from auditor.types import Report
from tests.fakes import FakeEncoder
from tests.helpers import alpaca_records

ENC = FakeEncoder()
MMD_ONLY = parse_rules({"rules": [{"name": "mmd", "check": "mmd", "severity": "fail"}]}, "test.yaml")


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cache_counts_reach_report_json(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", [dict(r) for r in alpaca_records()[:40]])
    cur = _jsonl(tmp_path / "cur.jsonl", [dict(r) for r in alpaca_records()[40:90]])
    cache = tmp_path / "cache"
    cold = run_audit(cur, ref, rules=MMD_ONLY, encoder=ENC, cache_dir=cache).report
    assert cold.cache is not None and cold.cache["used"] == 0 and cold.cache["rejected"] == 0
    warm = run_audit(cur, ref, rules=MMD_ONLY, encoder=ENC, cache_dir=cache).report
    assert warm.cache is not None and warm.cache["used"] == 90 and warm.cache["rejected"] == 0
    assert warm.cache["spot_checked"] > 0
    # the same verdict from cached vectors
    assert [f.p_value for f in warm.findings] == [f.p_value for f in cold.findings]
    d = warm.to_dict()
    assert d["cache"]["used"] == 90
    assert Report.from_dict(json.loads(json.dumps(d))).cache == warm.cache


def test_tampered_cache_is_counted_as_rejected(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", [dict(r) for r in alpaca_records()[:40]])
    cur = _jsonl(tmp_path / "cur.jsonl", [dict(r) for r in alpaca_records()[40:90]])
    cache = tmp_path / "cache"
    cold = run_audit(cur, ref, rules=MMD_ONLY, encoder=ENC, cache_dir=cache).report
    shards = sorted(p for p in cache.rglob("*.npy"))
    assert shards
    for p in shards:  # flip one vector value in each shard, MACs untouched
        arr = np.load(p, allow_pickle=False)
        name = [n for n in arr.dtype.names if arr.dtype[n].shape][0] if arr.dtype.names else None
        if name is None:
            continue
        arr[name][0, 0] += 0.5
        np.save(p, arr, allow_pickle=False)
    warm = run_audit(cur, ref, rules=MMD_ONLY, encoder=ENC, cache_dir=cache).report
    assert warm.cache is not None and warm.cache["rejected"] >= len(shards)
    assert [f.p_value for f in warm.findings] == [f.p_value for f in cold.findings]


def test_no_cache_no_counts(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", [dict(r) for r in alpaca_records()[:40]])
    cur = _jsonl(tmp_path / "cur.jsonl", [dict(r) for r in alpaca_records()[40:90]])
    report = run_audit(cur, ref, rules=MMD_ONLY, encoder=ENC, cache_dir=None).report
    assert report.cache is None and "cache" not in report.to_dict()

"""Null calibration of the whole default gate on real embeddings.

Random disjoint halves of one real dataset (Alpaca, real all-MiniLM-L6-v2 embeddings)
must not fail the gate: with alpha = 0.01 split across the rules, the expected false-fail
rate is at most 1%.  The foundation issue asks for <= 10% over >= 20 splits, the
targeted-selection issue <= 5% counting every check: 20 splits, at most 1 failure.
"""

import numpy as np
import pytest

from auditor.gate import evaluate
from auditor.rules import load_rules
from auditor.textutil import batch_from_texts
from auditor.types import ModelInfo, Snapshot
from tests.helpers import FIXTURES, alpaca_records

N_SPLITS = 20
N_PER_SIDE = 1000


def _load():
    with np.load(FIXTURES / "alpaca_minilm.npz", allow_pickle=False) as z:
        out = {k: z[k].astype(np.float32) for k in ("embeddings", "prompt", "response") if k in z}
    for v in out.values():
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return out


def _snapshot(idx, emb, recs):
    prompts = ["\n".join(p for p in (recs[i]["instruction"], recs[i]["input"]) if p) for i in idx]
    responses = [recs[i]["output"] for i in idx]
    batch = batch_from_texts(
        ["\n".join(p for p in (q, a) if p) for q, a in zip(prompts, responses)],
        ids=[f"r{i}" for i in idx],
        prompts=prompts,
        responses=responses,
    )
    views = {k: emb[k][idx] for k in ("prompt", "response") if k in emb}
    return Snapshot(batch=batch, embeddings=emb["embeddings"][idx], model=ModelInfo("minilm", "x", 384), views=views)


@pytest.mark.model
def test_default_gate_null_false_fail_rate():
    emb, recs = _load(), alpaca_records()
    rules = load_rules()
    fails, warns = [], 0
    for s in range(N_SPLITS):
        rng = np.random.default_rng(1000 + s)
        perm = rng.permutation(len(recs))
        ref = _snapshot(perm[:N_PER_SIDE], emb, recs)
        cur = _snapshot(perm[N_PER_SIDE : 2 * N_PER_SIDE], emb, recs)
        report = evaluate(ref, cur, rules, seed=s)
        if report.status == "fail":
            fails.append([f.summary for f in report.findings if f.severity == "fail"])
        warns += report.status == "warn"
    assert len(fails) <= 1, fails  # <= 5% of 20 rounds, every check counted

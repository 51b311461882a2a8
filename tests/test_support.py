"""off_support: records from another distribution are found; random halves pass."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from auditor.checks import registry
from auditor.checks.support import off_support
from auditor.stats import conformal_p
from auditor.textutil import batch_from_texts
from auditor.types import Snapshot
from tests.fakes import FakeEncoder
from tests.helpers import data

GATE_ALPHA = 0.01 / 6  # the gate's per-rule threshold with six fail rules
POOL = 3200


@pytest.fixture(scope="module")
def encoder() -> FakeEncoder:
    # 256 dimensions: at 64 the hashing encoder puts any English text within reach of
    # some Alpaca record, which says more about hash collisions than about support
    return FakeEncoder(dim=256)


@pytest.fixture(scope="module")
def alpaca(encoder: FakeEncoder) -> tuple[list[str], np.ndarray]:
    records = json.loads(data("alpaca_5000.json").read_text(encoding="utf-8"))[:POOL]
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in records]
    return texts, encoder.encode(texts)


def _off_topic(n: int, seed: int) -> list[str]:
    """Made-up server log lines: a coherent domain with a vocabulary Alpaca never uses."""
    rng = np.random.default_rng(seed)
    hosts = ["db01", "web03", "cache7", "auth2", "queue5"]
    levels = ["ERROR", "WARN", "INFO", "DEBUG"]
    units = ["kafka", "nginx", "postgres", "redis", "systemd", "kubelet"]
    msgs = [
        "connection reset by peer",
        "timeout after 30000ms",
        "OOMKilled container restarted",
        "disk usage 97% on /var",
        "TLS handshake failed",
        "replica lag 12s",
        "segfault at 0x7f3a",
        "evicted pod",
    ]
    return [
        f"{rng.choice(levels)} {rng.integers(10, 23)}:{rng.integers(10, 59)}:{rng.integers(10, 59)} "
        f"{rng.choice(hosts)} {rng.choice(units)}[{rng.integers(100, 9999)}]: {rng.choice(msgs)}; "
        f"retry={rng.integers(0, 5)} {rng.choice(units)} {rng.choice(msgs)}"
        for _ in range(n)
    ]


def _snap(texts: list[str], emb: np.ndarray, encoder: FakeEncoder) -> Snapshot:
    return Snapshot(batch=batch_from_texts(texts), embeddings=np.array(emb), model=encoder.info)


def test_registered_with_defaults() -> None:
    spec = registry()["off_support"]
    assert spec.needs == frozenset()
    assert spec.defaults["alpha_flag"] == 0.01


def test_conformal_p_counts_ties_and_is_never_zero() -> None:
    null = np.array([0.1, 0.2, 0.2, 0.5])
    p = conformal_p(null, np.array([0.05, 0.2, 0.6]))
    # (1 + #{null >= s}) / (n + 1): both tied 0.2s count against s = 0.2
    assert p.tolist() == pytest.approx([5 / 5, 4 / 5, 1 / 5])


@pytest.mark.parametrize("seed", [0, 1])
def test_finds_off_topic_records(alpaca, encoder, seed: int) -> None:
    texts, emb = alpaca
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(texts))
    ref_rows, cur_rows = perm[:2000], perm[2000:3000]
    off = _off_topic(40, seed)
    ref = _snap([texts[i] for i in ref_rows], emb[ref_rows], encoder)
    cur = _snap([texts[i] for i in cur_rows] + off, np.vstack([emb[cur_rows], encoder.encode(off)]), encoder)
    truth = set(cur.ids[len(cur_rows) :])

    findings = off_support(ref, cur, seed=seed)
    significant = [f for f in findings if f.p_value is not None and f.p_value < GATE_ALPHA]
    assert significant, [(f.summary, f.p_value) for f in findings]
    assert all(f.check == "off_support" and f.side == "current" for f in findings)
    flagged = set().union(*(f.record_ids for f in significant))
    assert len(flagged & truth) / len(flagged) >= 0.5
    assert len(flagged & truth) / len(truth) >= 0.5

    overall = [f for f in findings if f.details["scope"] == "overall"]
    assert len(overall) == 1
    assert overall[0].statistic == overall[0].details["n_off_support"]
    assert overall[0].statistic > 3 * overall[0].details["expected_off_support"]
    groups = [f for f in findings if f.details["scope"] == "group"]
    # the log lines are a coherent region of their own: one group holds most of them
    assert groups and max(len(set(g.record_ids) & truth) for g in groups) >= 20
    biggest = max(groups, key=lambda g: len(g.record_ids))
    assert len(set(biggest.record_ids) & truth) / len(biggest.record_ids) >= 0.9
    example = biggest.details["examples"][0]
    assert example["id"] in truth and example["nearest_reference_id"] in ref.ids
    json.dumps(biggest.to_dict())


def test_seeded_and_deterministic(alpaca, encoder) -> None:
    texts, emb = alpaca
    off = _off_topic(30, 3)
    ref = _snap(texts[:1000], emb[:1000], encoder)
    cur = _snap(texts[1000:1600] + off, np.vstack([emb[1000:1600], encoder.encode(off)]), encoder)
    a = [f.to_dict() for f in off_support(ref, cur, seed=5)]
    b = [f.to_dict() for f in off_support(ref, cur, seed=5)]
    assert a == b and a


def test_too_small_reference_returns_nothing(alpaca, encoder) -> None:
    texts, emb = alpaca
    # 50 reference records leave 25 to calibrate: floor(0.01 * 26) = 0, nothing can be flagged
    ref = _snap(texts[:50], emb[:50], encoder)
    off = _off_topic(20, 4)
    cur = _snap(off, encoder.encode(off), encoder)
    assert off_support(ref, cur, seed=0) == []
    assert off_support(ref, cur, seed=0, alpha_flag=0.2)  # a coarser level can flag them


def test_calibrated_on_random_halves(alpaca, encoder) -> None:
    """Two random halves of Alpaca: the smallest reported p stays above the gate's threshold."""
    texts, emb = alpaca
    n_splits, hits = 24, 0
    rng = np.random.default_rng(2024)
    for s in range(n_splits):
        perm = rng.permutation(len(texts))[:1600]
        ref = _snap([texts[i] for i in perm[:800]], emb[perm[:800]], encoder)
        cur = _snap([texts[i] for i in perm[800:]], emb[perm[800:]], encoder)
        findings = off_support(ref, cur, seed=s)
        if any(f.p_value is not None and f.p_value < GATE_ALPHA for f in findings):
            hits += 1
    assert hits <= math.floor(0.1 * n_splits)


def test_candidate_knn_matches_exact_search_for_close_neighbours() -> None:
    """The projected search re-ranks by exact cosine and keeps close neighbours."""
    from auditor import index
    from auditor.neighbours import candidate_knn, search_plan

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((300, 384)).astype(np.float32)
    base = centres[rng.integers(0, 300, 3000)] + 0.6 * rng.standard_normal((3000, 384)).astype(np.float32)
    queries = centres[rng.integers(0, 300, 500)] + 0.6 * rng.standard_normal((500, 384)).astype(np.float32)
    exact_s, exact_i = index.knn(base, queries, 3)
    approx_s, approx_i = candidate_knn(base, queries, 3, proj_dim=64, seed=1)
    assert np.mean(approx_i[:, 0] == exact_i[:, 0]) >= 0.95
    # returned similarities are exact cosines of the returned rows, best first
    b = index.normalize(base)
    q = index.normalize(queries)
    recomputed = np.einsum("qd,qkd->qk", q, b[approx_i])
    assert np.allclose(approx_s, recomputed, atol=1e-5)
    assert np.all(np.diff(approx_s, axis=1) <= 1e-6)
    assert np.all(approx_s[:, 0] <= exact_s[:, 0] + 1e-5)
    # small or low-dimensional inputs are searched exactly
    assert search_plan(1000, 1000, 384) is None
    assert search_plan(10_000, 10_000, 64) is None
    assert search_plan(10_000, 10_000, 384) == 64
    s, i = candidate_knn(base, queries, 3, proj_dim=None, seed=1)
    assert np.array_equal(i, exact_i)


def test_neighbour_pairs_link_each_row_to_its_nearest_others() -> None:
    from auditor.graph import components
    from auditor.neighbours import neighbour_pairs

    rng = np.random.default_rng(0)
    # two tight groups far apart: few links per row still connect each group, never both
    x = np.concatenate([np.eye(8)[0] + 0.01 * rng.standard_normal((20, 8)), np.eye(8)[1] + 0.01 * rng.standard_normal((15, 8))])
    rows, cols, sims = neighbour_pairs(x, 3, seed=0)
    assert rows.size == 35 * 3 and not np.any(rows == cols)
    keep = sims > 0.9
    labels = components(rows[keep], cols[keep], 35)
    assert np.unique(labels[:20]).size == 1 and np.unique(labels[20:]).size == 1 and labels[0] != labels[20]
    assert neighbour_pairs(x[:1], 3, seed=0)[0].size == 0
    # no edges: every node its own component
    assert components(np.zeros(0, np.int64), np.zeros(0, np.int64), 3).tolist() == [0, 1, 2]


def test_min_records_is_where_a_small_p_becomes_possible() -> None:
    """min_records = 198: half the reference calibrates, and alpha_flag = 0.01 needs 99
    calibration records before any record can be called off-support."""
    assert registry()["off_support"].min_records == 198
    enc = FakeEncoder()
    rng = np.random.default_rng(1)
    for m, below in ((197, False), (198, True)):
        ref_emb = np.eye(64)[0] + 0.3 * rng.standard_normal((m, 64))
        cur_emb = np.eye(64)[1] + 0.3 * rng.standard_normal((m, 64))
        ref = _snap([f"r{i}" for i in range(m)], ref_emb, enc)
        cur = _snap([f"c{i}" for i in range(m)], cur_emb, enc)
        best = min((f.p_value for f in off_support(ref, cur, seed=0)), default=1.0)
        assert (best < 1e-3) is below, (m, best)

"""Cluster enrichment: planted selections are found on the right side, null splits pass.

Topic tests use real all-MiniLM-L6-v2 embeddings of the Alpaca records from
tests/fixtures/alpaca_minilm.npz: the hashing FakeEncoder keeps word overlap but not topics
(k-means of its vectors puts no more than a handful of Alpaca's poem or story records in
any one cluster), so it cannot stand in for "a topic was over-selected".  The null
calibration uses FakeEncoder embeddings; the exactness of the test does not depend on the
encoder, only on the clustering being blind to which input a record came from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from auditor import index
from auditor.checks import registry
from auditor.checks.clusters import cluster_enrichment
from auditor.enrichment import cluster_tests, enriched_groups, resolutions
from auditor.planted import TOPICS
from auditor.textutil import batch_from_texts, content_hash
from auditor.types import Finding, ModelInfo, Snapshot
from tests.fakes import FakeEncoder
from tests.helpers import data, gate_level

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "alpaca_minilm.npz"
GATE_LEVEL = gate_level("clusters")  # the default rules' fail threshold for this check


@pytest.fixture(scope="module")
def alpaca() -> tuple[list[str], list[str]]:
    """(record texts as auditor.io joins them, instructions)."""
    recs = json.loads(data("alpaca_5000.json").read_text(encoding="utf-8"))
    texts = ["\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p) for r in recs]
    return texts, [r["instruction"] for r in recs]


@pytest.fixture(scope="module")
def minilm(alpaca) -> np.ndarray:
    """Real embeddings aligned with ``alpaca`` texts (rows matched by content hash)."""
    z = np.load(FIXTURE)
    # numpy's S32 drops trailing NUL bytes of a digest: pad back before hex
    hashes = z["embeddings_hashes"] if "embeddings_hashes" in z.files else z["hashes"]
    row = {h.ljust(32, b"\0").hex(): i for i, h in enumerate(hashes.tolist())}
    texts, _ = alpaca
    idx = [row.get(content_hash(t)) for t in texts]
    assert all(i is not None for i in idx), f"{FIXTURE.name} does not match the Alpaca fixture texts"
    return index.normalize(z["embeddings"][idx].astype(np.float32))


def _snap(texts: list[str], emb: np.ndarray, rows: np.ndarray, prefix: str) -> Snapshot:
    batch = batch_from_texts([texts[i] for i in rows], ids=[f"{prefix}{i}" for i in rows])
    return Snapshot(batch=batch, embeddings=emb[rows].copy(), model=ModelInfo("test", "0" * 64, emb.shape[1]))


def _ids(findings: list[Finding], side: str) -> set[str]:
    return {i for f in findings if f.side == side for i in f.record_ids}


def test_registered_with_params() -> None:
    spec = registry()["clusters"]
    assert spec.func is cluster_enrichment
    assert {"alpha", "min_ratio", "min_records"} <= set(spec.defaults)


def test_resolutions_scale_with_size() -> None:
    assert resolutions(10) == []
    ks = resolutions(1600)
    assert len(ks) == 3 and ks == sorted(ks) and ks[0] >= 4
    assert max(resolutions(10**6)) == 512


def test_topic_boost_found_on_current_side(alpaca, minilm) -> None:
    texts, instructions = alpaca
    topic = np.array([bool(re.search(r"\bstory\b", s.lower())) for s in instructions])
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(texts))
    ref_rows, pool = perm[:1500], perm[1500:]
    # current: every pooled story record, filled with others so stories are 4x their base share
    stories = pool[topic[pool]]
    n_cur = round(stories.size / (4 * topic.mean()))
    cur_rows = np.concatenate([stories, pool[~topic[pool]][: n_cur - stories.size]])
    ref, cur = _snap(texts, minilm, ref_rows, "r"), _snap(texts, minilm, cur_rows, "c")
    planted = {f"c{i}" for i in stories}

    findings = cluster_enrichment(ref, cur, seed=0)

    found = _ids(findings, "current")
    assert found, "no over-selected cluster reported"
    assert len(found & planted) / len(found) >= 0.5  # precision
    assert len(found & planted) / len(planted) >= 0.5  # recall
    assert not _ids(findings, "reference") & {f"r{i}" for i in ref_rows[topic[ref_rows]]}
    top = findings[0]
    assert top.check == "clusters" and top.side == "current"
    assert top.p_value is not None and top.p_value < GATE_LEVEL
    assert top.details["p_raw"] <= top.p_value
    assert top.effect_size is not None and top.effect_size >= np.log2(1.5)
    # the records named are the region's current members in over-represented neighbourhoods
    assert 0 < len(top.record_ids) <= top.details["n_current_in_cluster"]
    assert "story" in top.details["top_terms"]
    assert all(len(e) <= 200 for e in top.details["examples"])
    json.dumps(top.to_dict())  # details are JSON-serialisable


def test_topic_removal_found_on_reference_side(alpaca, minilm) -> None:
    texts, instructions = alpaca
    topic = np.array([bool(re.search(r"\bstory\b", s.lower())) for s in instructions])
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(texts))
    ref_rows, pool = perm[:2500], perm[2500:]
    cur_rows = pool[~topic[pool]][:2500]
    ref, cur = _snap(texts, minilm, ref_rows, "r"), _snap(texts, minilm, cur_rows, "c")
    removed = {f"r{i}" for i in ref_rows[topic[ref_rows]]}

    findings = [f for f in cluster_enrichment(ref, cur, seed=1) if f.side == "reference"]

    assert findings, "no under-selected cluster reported"
    best = findings[0]
    assert best.p_value is not None and best.p_value < GATE_LEVEL
    assert len(set(best.record_ids) & removed) / len(best.record_ids) >= 0.5
    assert best.effect_size is not None and best.effect_size < 0
    assert best.details["n_current_in_cluster"] < best.details["expected_current_from_reference_share"]
    # least covered first: records whose neighbourhoods hold the fewest current records
    shares = best.details["neighbour_current_share"]
    assert shares == sorted(shares) and len(shares) == len(best.record_ids)
    assert len(best.details["nearest_current_similarity"]) == len(best.record_ids)


def test_topic_over_several_clusters_reported_as_one_region(alpaca, minilm) -> None:
    """A broad topic (Alpaca's stories, poems, songs: ~5% of the records) splits over several
    fine clusters.  Each alone holds about a third of it; the agglomerative tree over the
    fine clusters and the grouping of neighbouring significant clusters report it as one
    region holding most of it.  Without them (hierarchy=False, regions=False) the best
    single finding misses most of the topic, so this test can fail."""
    texts, instructions = alpaca
    rx = re.compile(TOPICS["creative writing"], re.IGNORECASE)
    topic = np.array([bool(rx.search(s)) for s in instructions])
    rng = np.random.default_rng(2)
    t_rows, o_rows = rng.permutation(np.flatnonzero(topic)), rng.permutation(np.flatnonzero(~topic))
    n, share = 1000, topic.mean()
    k_ref, k_cur = round(share * n), round(4 * share * n)
    ref_rows = np.concatenate([t_rows[:k_ref], o_rows[: n - k_ref]])
    cur_rows = np.concatenate([t_rows[k_ref : k_ref + k_cur], o_rows[n - k_ref : 2 * n - k_ref - k_cur]])
    ref, cur = _snap(texts, minilm, ref_rows, "r"), _snap(texts, minilm, cur_rows, "c")
    planted = {f"c{i}" for i in t_rows[k_ref : k_ref + k_cur]}

    def best_recall(findings: list[Finding]) -> tuple[float, float, Finding | None]:
        best: tuple[float, float, Finding | None] = (0.0, 0.0, None)
        for f in findings:
            if f.side == "current" and f.p_value is not None and f.p_value < GATE_LEVEL:
                hit = len(set(f.record_ids) & planted)
                if hit / len(planted) > best[1]:
                    best = (hit / len(f.record_ids), hit / len(planted), f)
        return best

    _, old_recall, _ = best_recall(cluster_enrichment(ref, cur, seed=2, hierarchy=False, regions=False))
    precision, recall, f = best_recall(cluster_enrichment(ref, cur, seed=2))

    assert old_recall < 0.5
    assert f is not None and recall >= 0.5 and precision >= 0.5
    assert f.details["direction"] == "enriched"
    # union counts: the region's records, not just its most significant cluster's
    region = f.details["region"]
    assert f.details["n_current_in_cluster"] >= max(r[2] for r in region)
    assert f.p_value == min(r[4] for r in region)
    json.dumps(f.to_dict())


def _mixture(n_components: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((n_components, dim))
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def _draw(centres: np.ndarray, comp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = centres[comp] + 0.35 * rng.standard_normal((comp.size, centres.shape[1])) / np.sqrt(centres.shape[1])
    return index.normalize(x)


def test_planted_component_exact_ids(alpaca) -> None:
    """Structured embeddings with a known answer: current gains 40 records of a component
    the reference barely has; the finding points at exactly those current records."""
    texts, _ = alpaca
    rng = np.random.default_rng(7)
    centres = _mixture(25, 32, rng)
    ref_comp = rng.integers(1, 25, size=1000)
    ref_comp[:3] = 0  # the reference has a few
    cur_comp = np.concatenate([rng.integers(1, 25, size=960), np.zeros(40, dtype=np.int64)])
    emb = np.concatenate([_draw(centres, ref_comp, rng), _draw(centres, cur_comp, rng)])
    ref = _snap(texts, emb, np.arange(1000), "r")
    cur = Snapshot(
        batch=batch_from_texts(texts[1000:2000], ids=[f"c{i}" for i in range(1000)]),
        embeddings=emb[1000:].copy(),
        model=ref.model,
    )
    planted = {f"c{i}" for i in range(960, 1000)}

    findings = cluster_enrichment(ref, cur, seed=3)

    f = findings[0]
    assert f.side == "current" and set(f.record_ids) == planted
    # resolutions that found the same group were merged into this one finding
    assert f.details["merged_from"]
    assert all(not set(g.record_ids) & planted for g in findings[1:])
    assert all(g.p_value is not None and g.p_value > GATE_LEVEL for g in findings[1:])
    assert f.details["n_current_in_cluster"] == 40 and f.details["n_reference_in_cluster"] == 3
    assert f.statistic == 40.0
    assert f.p_value is not None and f.p_value < 1e-6
    assert not [f for f in findings if f.side == "reference"]
    # the same partition, reused by the triggers check
    groups = enriched_groups(ref, cur, seed=3)
    assert set(groups[0].tolist()) == set(range(960, 1000))


def test_min_ratio_suppresses_small_shifts(alpaca) -> None:
    texts, _ = alpaca
    rng = np.random.default_rng(11)
    centres = _mixture(8, 16, rng)
    # 8 big components; component 0 moves from 12.5% to 16.5% of the records: a 1.32x
    # ratio, highly significant with 4,000 records a side, but below the 1.5x default
    ref_comp = rng.integers(0, 8, size=4000)
    cur_comp = np.where(rng.random(4000) < 0.04, 0, rng.integers(0, 8, size=4000))
    emb = np.concatenate([_draw(centres, ref_comp, rng), _draw(centres, cur_comp, rng)])
    ref = _snap(texts, emb[:4000], np.arange(4000), "r")
    cur = _snap(texts, emb[4000:], np.arange(4000), "c")
    tests = cluster_tests(ref, cur, seed=0, ks=[8], min_ratio=1.0)
    assert min(t.p_adj for t in tests) < 0.01  # the shift is real ...
    assert cluster_enrichment(ref, cur, seed=0, ks=[8]) == []  # ... but too small to report
    loose = cluster_enrichment(ref, cur, seed=0, ks=[8], min_ratio=1.1)
    assert loose and loose[0].side == "current" and 1.1 <= loose[0].details["share_ratio"] < 1.5


def test_deterministic_given_seed(alpaca) -> None:
    texts, _ = alpaca
    rng = np.random.default_rng(5)
    centres = _mixture(10, 16, rng)
    comp_r = rng.integers(1, 10, size=600)
    comp_c = np.concatenate([rng.integers(1, 10, size=570), np.zeros(30, dtype=np.int64)])
    emb = np.concatenate([_draw(centres, comp_r, rng), _draw(centres, comp_c, rng)])
    ref = _snap(texts, emb, np.arange(600), "r")
    cur = _snap(texts, emb, np.arange(600, 1200), "c")
    a = [f.to_dict() for f in cluster_enrichment(ref, cur, seed=9)]
    index_km = index.kmeans(emb, 12, seed=9)[1]
    b = [f.to_dict() for f in cluster_enrichment(ref, cur, seed=9)]
    assert a and a == b
    assert np.array_equal(index_km, index.kmeans(emb, 12, seed=9)[1])


def test_tiny_inputs_give_no_findings(alpaca) -> None:
    texts, _ = alpaca
    emb = FakeEncoder().encode(texts[:12])
    ref = _snap(texts, emb, np.arange(6), "r")
    cur = _snap(texts, emb, np.arange(6, 12), "c")
    assert cluster_enrichment(ref, cur, seed=0) == []
    assert cluster_enrichment(ref, _snap(texts, emb, np.arange(0), "c"), seed=0) == []


def test_index_knn_is_exact() -> None:
    rng = np.random.default_rng(0)
    base, q = rng.standard_normal((300, 24)), rng.standard_normal((20, 24))
    sims, idx = index.knn(base, q, 5)
    bn, qn = index.normalize(base), index.normalize(q)
    expect = np.argsort(-(qn @ bn.T), axis=1)[:, :5]
    assert np.array_equal(idx, expect)
    assert np.allclose(sims, np.take_along_axis(qn @ bn.T, expect, axis=1), atol=1e-5)


def test_null_splits_are_calibrated(alpaca) -> None:
    """Random halves of one dataset: the smallest reported p-value must fall below the
    gate's per-rule threshold in at most 10% of splits (expected: about 0.2%)."""
    texts, _ = alpaca
    emb = FakeEncoder().encode(texts[:4000])
    hits = 0
    for s in range(20):
        rng = np.random.default_rng(100 + s)
        rows = rng.permutation(4000)[:1600]
        ref = _snap(texts, emb, rows[:800], "r")
        cur = _snap(texts, emb, rows[800:], "c")
        ps = [f.p_value for f in cluster_enrichment(ref, cur, seed=s) if f.p_value is not None]
        hits += bool(ps) and min(ps) < GATE_LEVEL
    assert hits / 20 <= 0.10


def test_min_records_is_where_a_small_p_becomes_possible() -> None:
    """min_records = 8: below 16 records in the union there is no resolution to test; at 8 a
    side a cluster of every current record and no reference one reaches BH-adjusted p < 1e-3."""
    assert registry()["clusters"].min_records == 8
    rng = np.random.default_rng(3)
    for m, found in ((7, False), (8, True)):
        # reference spread over three directions, current tight around a fourth
        ref_emb = np.eye(16)[rng.integers(0, 3, size=m)] + 0.05 * rng.standard_normal((m, 16))
        cur_emb = np.eye(16)[[5] * m] + 0.05 * rng.standard_normal((m, 16))
        texts = [f"record number {i}" for i in range(2 * m)]
        emb = np.concatenate([ref_emb, cur_emb]).astype(np.float32)
        ref = _snap(texts, emb, np.arange(m), "r")
        cur = _snap(texts, emb, np.arange(m, 2 * m), "c")
        best = min((f.p_value for f in cluster_enrichment(ref, cur, seed=0)), default=1.0)
        assert (best < 1e-3) is found, (m, best)


def test_one_labeller_names_a_group_by_its_distinctive_words() -> None:
    from auditor.terms import Background, label_tokens, phrase_words, top_terms

    # stopwords ("don't", "the") and bare numbers are not labels; an inner apostrophe stays
    assert label_tokens("Don't write 42 poems, the POEM-writer's pen") == ["write", "poems", "poem", "writer's", "pen"]
    # the ASCII fast path and the Unicode regex split words the same way
    for text in ("tango-delta, ok_go! it's 3x", "Ünïcode café—naïve_test"):
        assert phrase_words(text) == re.findall(r"[^\W_]+", text.lower())
    texts = [f"write a poem about the sea {i}" for i in range(10)] + [f"sort a list in python {i}" for i in range(30)]
    bg = Background.of(texts)
    assert top_terms(texts[:10], bg, n_groups=4, k=2) == ["poem", "sea"]
    assert set(top_terms(texts[10:], bg, n_groups=4, k=3)) == {"sort", "list", "python"}
    assert top_terms(["a the of"], bg, n_groups=4) == []


def test_pca_matches_svd_and_fixes_signs() -> None:
    from auditor.pca import pca

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((500, 6)) * [5, 3, 2, 1, 0.5, 0.1]).astype(np.float32)
    p = pca(x, 3)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    assert np.allclose(p.explained, s[:3] ** 2 / (s**2).sum(), atol=1e-5)
    assert np.allclose(np.abs(p.coords), np.abs(xc @ vt[:3].T), atol=1e-3)
    # axis signs come from the scatter matrix, not from the solver: -x has the same axes,
    # and shuffled rows project to the same points
    assert np.allclose(pca(-x, 3).coords, -p.coords, atol=1e-3)
    order = rng.permutation(500)
    assert np.allclose(pca(x[order], 3).coords, p.coords[order], atol=1e-3)
    padded = pca(x[:, :1], 2)
    assert padded.coords.shape == (500, 2) and np.all(padded.coords[:, 1] == 0)
    with pytest.raises(ValueError):
        pca(x, 2, fit_rows=100)


def test_registry_does_not_hide_a_missing_dependency(monkeypatch) -> None:
    import sys

    # polars missing: the near-duplicate family cannot import, and the registry says so
    monkeypatch.setitem(sys.modules, "polars", None)
    for mod in ("auditor.checks.duplicates", "auditor.minhash"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    with pytest.raises(ModuleNotFoundError):
        registry()

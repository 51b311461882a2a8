"""The distributed MinHash LSH pass (auditor.engine.aggregate) equals the local one, row
for row, without Ray: the map step on shards gives the rows of the whole, and the reduce
gives the same candidate pairs and Jaccard values (the Ray runs are in test_engine_ray)."""

from __future__ import annotations

import numpy as np
import pytest

from auditor import planted
from auditor.checks.duplicates import near_duplicate_edges
from auditor.checks.lexical import _record_words
from auditor.checks.triggers import count_ngrams
from auditor.engine import (
    _LSH,
    _RFF,
    distributed_knn,
    distributed_lsh,
    distributed_mmd_rff,
    distributed_nearest_centroid,
    distributed_ngrams,
    distributed_word_carriers,
    passes,
)
from auditor.engine.aggregate import (
    Serial,
    lsh_from_keys,
    ngram_counts,
    rff_values,
    shard_band_keys,
    word_carriers,
)
from auditor.kernels import permutation_values
from auditor.minhash import lsh_candidate_pairs, pair_jaccard, shingle_hashes, signatures
from auditor.stats import permutation_p_value
from tests.fakes import fake_snapshot
from tests.helpers import alpaca_records


def _texts() -> list[str]:
    pool = planted.records_from_alpaca(alpaca_records()[:800])
    sc = planted.near_duplicates(pool, seed=5, n=300, groups=3, copies=10)
    # short texts (under three words) take their own path in shingle_hashes
    return [*sc.current.texts, *sc.reference.texts, "ok", "", "two words"]


def test_sharded_keys_and_pairs_equal_the_whole() -> None:
    texts = _texts()
    values, starts = shingle_hashes(texts)
    sig = signatures(values, starts, num_perm=40, seed=7)
    lo, hi = lsh_candidate_pairs(sig, bands=20, rows=2)
    assert lo.size > 20, "the planted near-duplicates must give candidate pairs"
    keys = np.concatenate(
        [shard_band_keys(texts[s : s + 97], bands=20, rows=2, seed=7) for s in range(0, len(texts), 97)]
    )
    np.testing.assert_array_equal(keys, shard_band_keys(texts, bands=20, rows=2, seed=7))
    dlo, dhi, dval, dstart = lsh_from_keys(texts, keys)
    np.testing.assert_array_equal(dlo, lo)
    np.testing.assert_array_equal(dhi, hi)
    np.testing.assert_array_equal(pair_jaccard(dval, dstart, dlo, dhi), pair_jaccard(values, starts, lo, hi))
    # the driver keeps only the candidate rows' shingles
    assert dval.size < values.size


def test_hook_is_off_on_the_local_engine_and_used_when_set() -> None:
    texts = _texts()
    with passes("local"):
        assert distributed_lsh(texts, bands=20, rows=2, seed=0) is None
        assert distributed_ngrams(texts, max_n=4, min_count=5) is None
        assert distributed_word_carriers(texts, _record_words, min_records=5) is None
        x = np.eye(4, dtype=np.float32)
        assert distributed_nearest_centroid(x, x) is None and distributed_knn(x, x, 2) is None
        kw = {"permutations": 99, "bandwidth": 1.0, "rng": np.random.default_rng(0), "features": 16}
        assert distributed_mmd_rff(x, x, device="cpu", **kw) is None  # type: ignore[arg-type]
    local = near_duplicate_edges(None, texts, cosine_threshold=0.9, jaccard_threshold=0.5, seed=3)
    calls: list[int] = []

    def sharded(ts, *, bands, rows, seed):  # type: ignore[no-untyped-def]
        calls.append(len(ts))
        keys = np.concatenate(
            [
                shard_band_keys(ts[s : s + 50], bands=bands, rows=rows, seed=seed)
                for s in range(0, len(ts), 50)
            ]
        )
        return lsh_from_keys(ts, keys)

    token = _LSH.set(sharded)
    try:
        remote = near_duplicate_edges(None, texts, cosine_threshold=0.9, jaccard_threshold=0.5, seed=3)
    finally:
        _LSH.reset(token)
    assert calls == [len(texts)]
    assert local[0].size > 0
    for a, b in zip(local, remote):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- n-grams, words, MMD sums


def _ngram_texts() -> list[str]:
    pool = planted.records_from_alpaca(alpaca_records()[:600])
    sc = planted.trigger(pool, 0.05, seed=2, n=250)
    texts = [*sc.reference.texts, *sc.current.texts]
    # empty records, one-word records, a phrase repeated inside one record, non-ASCII words
    extra = [
        "",
        "ok",
        "alpha bravo alpha bravo alpha bravo",
        "Alpha, bravo!",
        "Grüße aus Köln, grüße aus köln",
    ]
    return [*texts, *extra, *["Grüße aus Köln 7 step"] * 6]


def _assert_ngrams_equal(got: tuple, want: object) -> None:  # type: ignore[type-arg]
    words, gram_tokens, pair_gram, pair_doc, df = got
    assert words == want.words  # type: ignore[attr-defined]
    for name, a_list in (
        ("gram_tokens", gram_tokens),
        ("pair_gram", pair_gram),
        ("pair_doc", pair_doc),
        ("df", df),
    ):
        b_list = getattr(want, name)
        assert len(a_list) == len(b_list), name
        for a, b in zip(a_list, b_list):
            assert a.dtype.kind == b.dtype.kind, name
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_sharded_ngram_counts_equal_count_ngrams() -> None:
    texts = _ngram_texts()
    for max_n, min_count in ((4, 5), (2, 1), (4, 40)):
        want = count_ngrams(texts, max_n, min_count)
        assert len(want.df) >= 2 and int(want.df[-1].sum()) > 0 or min_count == 40
        for shard in (37, 1000):
            _assert_ngrams_equal(ngram_counts(texts, max_n, min_count, shard=shard, ex=Serial()), want)
    for edge in ([], [""], ["one"], ["a b", "a b"]):
        _assert_ngrams_equal(ngram_counts(edge, 4, 1, shard=1, ex=Serial()), count_ngrams(edge, 4, 1))


def _local_carriers(texts: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for d, ws in enumerate(_record_words(texts)):
        for w in ws:
            out.setdefault(w, []).append(d)
    return out


def test_sharded_word_carriers_equal_the_checks_loop() -> None:
    texts = [t.lower() for t in _ngram_texts()]
    local = _local_carriers(texts)
    for min_records in (1, 10):
        want = {w: d for w, d in local.items() if len(d) >= min_records}
        assert len(want) > 50
        got = word_carriers(texts, _record_words, min_records=min_records, shard=41, ex=Serial())
        assert got == want


def test_sharded_rff_sums_equal_the_local_values() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((230, 16)).astype(np.float32)
    y = (rng.standard_normal((190, 16)) + 0.05).astype(np.float32)
    want = permutation_values(
        x, y, permutations=299, bandwidth=4.0, rng=np.random.default_rng(9), method="rff", features=64
    )
    r = np.random.default_rng(9)
    got = rff_values(x, y, permutations=299, bandwidth=4.0, rng=r, features=64, shard=100, ex=Serial())
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # the generator is left exactly where the local code leaves it
    r_local = np.random.default_rng(9)
    permutation_values(x, y, permutations=299, bandwidth=4.0, rng=r_local, method="rff", features=64)
    assert r.integers(2**62) == r_local.integers(2**62)
    assert permutation_p_value(float(got[0]), got[1:]) == permutation_p_value(float(want[0]), want[1:])


def test_mmd_check_through_the_hook_equals_local() -> None:
    from auditor.checks.drift import mmd

    sc = planted.topic_boost(
        planted.records_from_alpaca(alpaca_records()[:900]), "code", factor=3.0, seed=1, n=200
    )
    ref, cur = fake_snapshot(sc.reference), fake_snapshot(sc.current)
    kw = {"seed": 4, "permutations": 199, "max_per_side": 50, "features": 128}
    local = mmd(ref, cur, **kw)[0]
    token = _RFF.set(lambda x, y, **k: rff_values(x, y, shard=64, ex=Serial(), **k))
    try:
        remote = mmd(ref, cur, **kw)[0]
    finally:
        _RFF.reset(token)
    assert local.details["method"] == "rff"
    assert remote.p_value == local.p_value
    assert abs(float(remote.statistic) - float(local.statistic)) <= 1e-5 * abs(float(local.statistic))  # type: ignore[arg-type]


def test_kmeans_assignment_through_the_hook_equals_local() -> None:
    from auditor import index
    from auditor.engine import _NEAREST
    from auditor.engine.aggregate import nearest_centroids
    from tests.helpers import alpaca_minilm

    x = alpaca_minilm()[:1500]
    local_c, local_a = index.kmeans(x, 40, seed=3)
    token = _NEAREST.set(lambda xs, cs: nearest_centroids(xs, cs, shard=97, ex=Serial()))
    try:
        remote_c, remote_a = index.kmeans(x, 40, seed=3)
    finally:
        _NEAREST.reset(token)
    np.testing.assert_array_equal(remote_c, local_c)  # fitted on the same seeded sample
    assert np.unique(local_a).size > 20
    np.testing.assert_array_equal(remote_a, local_a)


def test_knn_through_the_hook_equals_local() -> None:
    from auditor import index
    from auditor.engine import _KNN
    from auditor.engine.aggregate import sharded_knn
    from auditor.neighbours import candidate_knn
    from tests.helpers import alpaca_minilm

    x = alpaca_minilm()[:1200]
    local = index.knn(x[:700], x[500:], 11)
    local_cand = candidate_knn(x[:700], x[500:], 5, proj_dim=32, seed=1)
    calls: list[int] = []

    def sharded(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(queries))
        return sharded_knn(base, queries, k, shard=83, ex=Serial())

    token = _KNN.set(sharded)
    try:
        remote = index.knn(x[:700], x[500:], 11)
        remote_cand = candidate_knn(x[:700], x[500:], 5, proj_dim=32, seed=1)
    finally:
        _KNN.reset(token)
    assert calls == [700, 700]
    np.testing.assert_array_equal(remote[1], local[1])
    np.testing.assert_allclose(remote[0], local[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(remote_cand[1], local_cand[1])
    np.testing.assert_array_equal(remote_cand[0], local_cand[0])  # re-ranked by exact cosine


def test_ivf_candidate_search_with_the_hooks_active_equals_local(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor import neighbours
    from auditor.engine import _KNN, _NEAREST
    from auditor.engine.aggregate import nearest_centroids, sharded_knn
    from tests.helpers import alpaca_minilm

    # the IVF plan for a small base: the index is built once on the driver (k-means on a
    # seeded sample, whose assignment may run on the shards) and each query's result does
    # not depend on the others, so the engine cannot change it
    monkeypatch.setattr(neighbours, "IVF_MIN_BASE", 1000)
    x = alpaca_minilm()[:2400]
    neighbours._CACHE.clear()
    local = neighbours.candidate_knn(x[:1800], x[600:], 5, proj_dim=None, seed=2)
    neighbours._CACHE.clear()
    calls: list[str] = []

    def nearest(xs: np.ndarray, cs: np.ndarray) -> np.ndarray:
        calls.append("nearest")
        return nearest_centroids(xs, cs, shard=97, ex=Serial())

    def knn(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append("knn")
        return sharded_knn(base, queries, k, shard=83, ex=Serial())

    t_nearest, t_knn = _NEAREST.set(nearest), _KNN.set(knn)
    try:
        remote = neighbours.candidate_knn(x[:1800], x[600:], 5, proj_dim=None, seed=2)
    finally:
        _KNN.reset(t_knn)
        _NEAREST.reset(t_nearest)
        neighbours._CACHE.clear()
    assert calls == ["nearest"]  # the centroid fit's assignment; the search stays here
    np.testing.assert_array_equal(remote[1], local[1])
    np.testing.assert_array_equal(remote[0], local[0])

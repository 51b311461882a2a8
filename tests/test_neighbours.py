"""The inverted-file candidate search (auditor.neighbours.ivf_knn): exact when every list
is probed, finds near-identical pairs on real MiniLM vectors, and reproducible bit for bit
across calls, thread counts and query shards."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from auditor import index, neighbours
from tests.helpers import alpaca_minilm


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    neighbours._CACHE.clear()
    yield
    neighbours._CACHE.clear()


def _noisy_copies(x: np.ndarray, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return index.normalize(x + scale * rng.standard_normal(x.shape).astype(np.float32))


def test_ivf_probing_every_list_equals_exact_search() -> None:
    x = alpaca_minilm()
    base, queries = x[:1500], x[1500:2100]
    sims, idx = neighbours.ivf_knn(base, queries, 5, nlist=24, nprobe=24, seed=3)
    want_s, want_i = index.knn(base, queries, 5)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(sims, want_s, rtol=0, atol=1e-5)


def test_ivf_pads_like_faiss_when_the_probed_lists_are_short() -> None:
    x = alpaca_minilm()[:300]
    sims, idx = neighbours.ivf_knn(x, x[:10], 50, nlist=30, nprobe=1, seed=0)
    assert (idx == -1).any()  # one list of ~10 rows cannot hold 50 neighbours
    assert np.all(sims[idx == -1] < -1e30)
    assert np.all(idx[:, 0] == np.arange(10))  # every row is in its own nearest list


def test_ivf_finds_near_identical_pairs_on_minilm_vectors() -> None:
    x = alpaca_minilm()
    base = np.concatenate([x, _noisy_copies(x[:2000], 0.02, seed=1)])
    queries = _noisy_copies(x[2000:4000], 0.015, seed=2)
    plan = (int(round(4 * np.sqrt(len(base)))), neighbours.IVF_NPROBE)
    sims, idx = neighbours.ivf_knn(base, queries, 10, nlist=plan[0], nprobe=plan[1], seed=5)
    want_s, want_i = index.knn(base, queries, 10)
    close = want_s >= 0.9
    assert close.sum() > 1500  # the noisy copies are near-identical to their originals
    found = np.array([want_i[r, c] in idx[r] for r, c in zip(*np.nonzero(close))])
    assert found.mean() >= 0.99, found.mean()
    assert (idx[:, 0] == want_i[:, 0]).mean() >= 0.95
    # exact cosines: every reported similarity is the true one
    np.testing.assert_allclose(sims, np.einsum("qd,qkd->qk", queries, base[idx]), rtol=0, atol=1e-5)


def test_ivf_is_reproducible_across_calls_threads_and_shards() -> None:
    x = alpaca_minilm()
    base, queries = x[:3000], x[2000:5000]
    first = neighbours.ivf_knn(base, queries, 7, nlist=200, nprobe=8, seed=11)
    neighbours._CACHE.clear()
    threads = index.faiss.omp_get_max_threads()
    index.faiss.omp_set_num_threads(1)
    try:
        single = neighbours.ivf_knn(base, queries, 7, nlist=200, nprobe=8, seed=11)
    finally:
        index.faiss.omp_set_num_threads(threads)
    parts = [
        neighbours.ivf_knn(base, queries[s:e], 7, nlist=200, nprobe=8, seed=11)
        for s, e in ((0, 1), (1, 997), (997, 2500), (2500, 3000))
    ]
    for got in (single, tuple(np.concatenate([p[j] for p in parts]) for j in range(2))):
        np.testing.assert_array_equal(got[1], first[1])
        np.testing.assert_array_equal(got[0], first[0])
    other = neighbours.ivf_knn(base, queries, 7, nlist=200, nprobe=8, seed=12)
    assert not np.array_equal(other[1], first[1])  # the seed does choose the lists


def test_candidate_knn_switches_to_ivf_by_base_size(monkeypatch: pytest.MonkeyPatch) -> None:
    x = alpaca_minilm()[:2000]
    assert neighbours.ivf_plan(neighbours.IVF_MIN_BASE - 1) is None
    nlist, nprobe = neighbours.ivf_plan(1_000_000)  # type: ignore[misc]
    assert nlist == 4000 and nprobe == neighbours.IVF_NPROBE
    monkeypatch.setattr(neighbours, "IVF_MIN_BASE", 1000)
    plan = neighbours.ivf_plan(2000)
    assert plan is not None
    got = neighbours.candidate_knn(x, x[:500], 3, proj_dim=None, seed=4)
    want = neighbours.ivf_knn(x, x[:500], 3, nlist=plan[0], nprobe=plan[1], seed=4)
    np.testing.assert_array_equal(got[1], want[1])
    assert len(neighbours._CACHE) == 1  # the second search reused the built index
    # a query set smaller than the base never changes the plan (one search per base)
    small = neighbours.candidate_knn(x, x[:3], 3, proj_dim=None, seed=4)
    np.testing.assert_array_equal(small[1], got[1][:3])
    rows, cols, _ = neighbours.neighbour_pairs(x, 3, seed=0)
    assert np.all(cols != rows) and np.unique(rows).size == len(x)

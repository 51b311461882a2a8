"""Nearest-neighbour candidates for the checks: exact search for small bases, a seeded
inverted-file (IVF) search for large ones, and a seeded random projection re-ranked by
exact cosine for mid-sized high-dimensional searches.

The one home of the search plan, so that every check that scores records by their
neighbours (off-support distances, flipped-response matching, linking records into
groups) makes the same speed/accuracy trade and documents it once.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass

import numpy as np

from auditor import index

# candidate search for large inputs (see candidate_knn)
PROJECTION_DIM = 64
CANDIDATE_EXTRA = 16
EXACT_BELOW_PAIRS = 40_000_000

# inverted-file search for large bases (see ivf_knn).  The plan depends on the base's size
# only, never on the number of queries: a check that scores calibration and test records
# in two calls against one base must get one search for both (see candidate_knn).
IVF_MIN_BASE = 20_000  # measured: exact 20k x 20k at 64-d ~5 s on 2 shared cores
IVF_LISTS_PER_SQRT = 4  # about 4 * sqrt(n_base) lists
IVF_NPROBE = 48
IVF_TRAIN_PER_LIST = 32  # seeded training sample for the centroids
IVF_TRAIN_ITER = 10
PROBE_EXTRA = 4  # float32 candidates re-scored in float64 when choosing lists


def search_plan(n_base: int, n_queries: int, dim: int) -> int | None:
    """Projection dimension for :func:`candidate_knn` at this size, or None for exact search.

    Exact search is kept below ~4e7 pairs, where it takes well under a second.  Bases of
    ``IVF_MIN_BASE`` rows or more are searched by the inverted file whatever this says
    (:func:`ivf_plan`, decided inside :func:`candidate_knn`).
    """
    if dim <= 2 * PROJECTION_DIM or n_base * n_queries < EXACT_BELOW_PAIRS:
        return None
    return PROJECTION_DIM


def candidate_knn(
    base: np.ndarray, queries: np.ndarray, k: int, *, proj_dim: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest rows of ``base`` by cosine: ``(sims, idx)``, best first, exact cosines.

    With ``proj_dim`` set, candidates are the ``k + CANDIDATE_EXTRA`` nearest in a seeded
    Gaussian random projection to ``proj_dim`` dimensions (Johnson-Lindenstrauss), re-ranked
    by exact cosine.  The scan of all pairs is then ~3.5x cheaper at 384 dimensions.  Close
    pairs survive the projection (a pair at cosine c keeps it within ~(1 - c^2)/sqrt(dim)),
    so near-identical neighbours are found; for far ones the result can be the best
    candidate rather than the true nearest.  Callers use it only where that is harmless:
    a score computed by the same function for calibration and test records keeps a
    conformal test exact, and a label-blind graph keeps a permutation test exact.

    Bases of at least ``IVF_MIN_BASE`` rows are searched by :func:`ivf_knn` whatever
    ``proj_dim`` says (the plan follows the base alone, so two calls against one base, as
    a conformal test's calibration and test scores make, always share one search).
    """
    n_base = base.shape[0]
    plan = ivf_plan(n_base)
    if plan is not None:
        return ivf_knn(base, queries, k, nlist=plan[0], nprobe=plan[1], seed=seed)
    if proj_dim is None or n_base <= k + CANDIDATE_EXTRA:
        return index.knn(base, queries, k)
    b = index.normalize(base)
    q = index.normalize(queries)
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((b.shape[1], proj_dim)).astype(np.float32)
    _, cand = index.knn(b @ proj, q @ proj, k + CANDIDATE_EXTRA)
    sims = np.empty(cand.shape, dtype=np.float32)
    step = 1024  # bounds the (step, k + extra, dim) gather
    for start in range(0, q.shape[0], step):
        sl = slice(start, start + step)
        sims[sl] = np.einsum("qd,qkd->qk", q[sl], b[cand[sl]])
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(cand, order, axis=1)


def ivf_plan(n_base: int) -> tuple[int, int] | None:
    """``(nlist, nprobe)`` of the inverted-file search for a base of ``n_base`` rows, or
    None below ``IVF_MIN_BASE`` (exact or projected search is fast enough there)."""
    if n_base < IVF_MIN_BASE:
        return None
    nlist = max(1, min(n_base, round(IVF_LISTS_PER_SQRT * math.sqrt(n_base))))
    return nlist, min(nlist, IVF_NPROBE)


@dataclass(frozen=True)
class IvfIndex:
    """A trained inverted file: unit-norm ``centroids`` (nlist, d) and the faiss
    ``IndexIVFFlat`` holding the normalised base rows in their nearest centroid's list."""

    centroids: np.ndarray
    ivf: object  # faiss.IndexIVFFlat (faiss has no type stubs)
    quantizer: object  # held here so faiss's pointer to it stays valid


def _best_lists(x: np.ndarray, centroids: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``p`` most similar centroids of each unit-norm row of ``x``, best first:
    ``(sims, idx)``, reproducible bit for bit.

    A BLAS search rounds a similarity differently in the last bit for a different batch of
    rows or thread count, which would let a row near a list boundary fall into either list,
    so a shard of the queries could probe other lists than the whole.  The float32 search
    only proposes ``p + PROBE_EXTRA`` candidates; each is re-scored in float64 (the products
    of float32 values are exact there, so the sum rounds to the same float32 in any order
    except in a ~1e-8 sliver) and the ``p`` best are kept, ties to the lower centroid.
    """
    n_c = centroids.shape[0]
    q = min(n_c, p + PROBE_EXTRA)
    p = min(p, n_c)
    flat = index.faiss.IndexFlatIP(centroids.shape[1])
    flat.add(centroids)
    c64 = centroids.astype(np.float64)
    sims = np.empty((x.shape[0], p), dtype=np.float32)
    idx = np.empty((x.shape[0], p), dtype=np.int64)
    step = 8192  # bounds the (step, q, d) float64 gather
    for start in range(0, x.shape[0], step):
        xs = x[start : start + step]
        _, cand = flat.search(xs, q)
        cand = np.sort(cand.astype(np.int64), axis=1)  # ties then go to the lower centroid
        exact = np.einsum("nd,nqd->nq", xs.astype(np.float64), c64[cand]).astype(np.float32)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :p]
        sims[start : start + step] = np.take_along_axis(exact, order, axis=1)
        idx[start : start + step] = np.take_along_axis(cand, order, axis=1)
    return sims, idx


def build_ivf(base: np.ndarray, nlist: int, *, seed: int) -> IvfIndex:
    """Train ``nlist`` centroids by spherical k-means (:func:`auditor.index.kmeans`) on a
    seeded sample of ``IVF_TRAIN_PER_LIST * nlist`` rows of ``base`` and file every row
    under its nearest centroid.  Deterministic in ``(base, nlist, seed)``."""
    b = index.normalize(base)
    n, d = b.shape
    rng = np.random.default_rng(seed)
    m = min(n, IVF_TRAIN_PER_LIST * nlist)
    sample = np.sort(rng.choice(n, size=m, replace=False))
    centroids, _ = index.kmeans(b[sample], nlist, seed=seed, niter=IVF_TRAIN_ITER)
    _, lists = _best_lists(b, centroids, 1)
    quantizer = index.faiss.IndexFlatIP(d)
    quantizer.add(centroids)
    ivf = index.faiss.IndexIVFFlat(quantizer, d, centroids.shape[0], index.faiss.METRIC_INNER_PRODUCT)
    assign = np.ascontiguousarray(lists[:, 0])  # a named array: faiss reads it after swig_ptr
    ivf.add_core(n, index.faiss.swig_ptr(b), None, index.faiss.swig_ptr(assign))
    return IvfIndex(centroids=centroids, ivf=ivf, quantizer=quantizer)


# the last index built (it holds a float32 copy of the base until the next build), keyed
# by the base's bytes: the checks search one base twice (a
# conformal test's calibration and test records, a null and a test pass)
_CACHE: dict[tuple[str, int, int], IvfIndex] = {}
_CACHE_LOCK = threading.Lock()


def _cached_ivf(base: np.ndarray, nlist: int, seed: int) -> IvfIndex:
    arr = np.ascontiguousarray(base, dtype=np.float32)
    digest = hashlib.blake2b(arr.tobytes(), digest_size=16)
    digest.update(repr(arr.shape).encode())
    key = (digest.hexdigest(), nlist, seed)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    built = build_ivf(arr, nlist, seed=seed)
    with _CACHE_LOCK:
        _CACHE.clear()
        _CACHE[key] = built
    return built


def ivf_knn(
    base: np.ndarray, queries: np.ndarray, k: int, *, nlist: int, nprobe: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest rows of ``base`` by cosine among the rows filed in each query's ``nprobe``
    nearest of ``nlist`` lists (an inverted file, Sivic & Zisserman 2003; Jegou, Douze &
    Schmid 2011): ``(sims, idx)``, best first, exact cosines, -1 / -inf padding where the
    probed lists hold fewer than ``k`` rows (as faiss pads).

    Why an approximate search is valid here: the checks use it for conformal and
    permutation tests in which calibration and test records (or both sides of a
    permutation) are scored by this same function against the same base, so the tests stay
    exact whatever the search misses; it only changes which statistic is tested.  A pair
    of near-identical records (cosine >= 0.9, what flipped_responses matches) lies close
    to the same centroids, so one is found from the other unless both sit on a boundary
    between more than ``nprobe`` lists: measured recall of such pairs is >= 0.99 on real
    MiniLM and static-model vectors (benchmarks/RESULTS.md), exact cosines throughout.

    Deterministic: the index follows ``(base, nlist, seed)``, the probed lists are chosen
    reproducibly (see :func:`_best_lists`), and each query scans its lists alone with
    per-pair inner products, so the result for a query does not depend on the other
    queries, on how they are split into shards, or on the thread count.
    """
    n_base = base.shape[0]
    q = index.normalize(queries)
    k = int(min(k, n_base))
    if k <= 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], 0), dtype=np.float32), np.zeros((q.shape[0], 0), dtype=np.int64)
    if q.shape[1] != base.shape[1]:
        raise ValueError(f"dimension mismatch: index {base.shape[1]}, queries {q.shape[1]}")
    built = _cached_ivf(base, nlist, seed)
    return search_ivf(built, q, k, nprobe)


def search_ivf(built: IvfIndex, q: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """Search unit-norm float32 queries ``q`` in a built index (see :func:`ivf_knn`)."""
    ivf = built.ivf
    probe_sims, probes = _best_lists(q, built.centroids, nprobe)
    # faiss's Python search_preassigned takes nprobe from the index, which the cache
    # shares: set and search under one lock
    with _CACHE_LOCK:
        ivf.nprobe = int(probes.shape[1])  # type: ignore[attr-defined]
        sims, idx = ivf.search_preassigned(q, k, probes, probe_sims)  # type: ignore[attr-defined]
    # faiss pads missing neighbours with -FLT_MAX; the exact search pads with -inf-like
    # -3.4e38 too, so keep faiss's value for the same meaning
    return np.ascontiguousarray(sims, dtype=np.float32), idx.astype(np.int64)


def neighbour_pairs(vectors: np.ndarray, links: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row linked to its ``links`` nearest other rows: ``(rows, cols, cosines)``.

    For grouping records into connected components a few links per record are enough to
    connect a group, so this stays linear in the number of rows; the search follows
    :func:`search_plan` for the size.
    """
    m = vectors.shape[0]
    if m < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    plan = search_plan(m, m, vectors.shape[1])
    sims, idx = candidate_knn(vectors, vectors, min(m, links + 1), proj_dim=plan, seed=seed)
    rows = np.repeat(np.arange(m), idx.shape[1])
    cols = idx.ravel()
    s = sims.ravel()
    # faiss pads with -1 when fewer neighbours exist; a row is not its own neighbour
    keep = (cols >= 0) & (cols != rows)
    return rows[keep], cols[keep], s[keep]

"""Vector search and clustering: the only module that imports faiss.

Every function takes float arrays of shape (n, d), copies them to contiguous float32 and
L2-normalises the copy, so inner product is cosine similarity whatever the caller passed
(the caller's read-only ``Snapshot.embeddings`` are never written to).  The searches here
are exact flat ones; for large bases the checks' candidate search
(:mod:`auditor.neighbours`) builds an inverted file from :func:`kmeans` centroids and
scans it with faiss, and documents why the approximation leaves their tests exact.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: with the default spin-wait, faiss threads burn their time slices
# whenever other processes share the cores (CI runners, a laptop), and k-means on a few
# thousand points took 10x longer in measurements.  Must be set before faiss's OpenMP
# runtime starts, hence before the import; an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from auditor.engine import distributed_knn, distributed_nearest_centroid  # noqa: E402

# faiss defaults to every core OpenMP sees; pin it explicitly so behaviour does not depend
# on an inherited OMP_NUM_THREADS, and never ask for more threads than there are cores.
faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))


def normalize(x: np.ndarray) -> np.ndarray:
    """Contiguous float32 copy of ``x`` with unit-norm rows (zero rows stay zero)."""
    arr = np.array(x, dtype=np.float32, order="C", copy=True)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("vectors contain NaN or Inf")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    np.divide(arr, norms, out=arr, where=norms > 0)
    return arr


def kmeans(x: np.ndarray, k: int, *, seed: int, niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of the rows of ``x``.

    Returns ``(centroids, assignments)``: centroids (k', d) float32 with unit norm and the
    index of each row's nearest centroid (int64, shape (n,)).  ``k`` is clipped to the
    number of rows.  The result is a deterministic function of ``(x, k, seed, niter)``:
    faiss seeds its initial sample and training subsample from ``seed``, and assignment
    is an exact search.
    """
    xn = normalize(x)
    n, d = xn.shape
    if n == 0:
        return np.zeros((0, d), dtype=np.float32), np.zeros(0, dtype=np.int64)
    k = int(max(1, min(k, n)))
    if k == 1:
        c = xn.mean(axis=0, keepdims=True)
        return normalize(c), np.zeros(n, dtype=np.int64)
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=int(seed) % (2**31 - 1),
        spherical=True,
        verbose=False,
        # few points per centroid is a choice here (fine resolutions), not a mistake: keep
        # faiss from warning about it, and train on every point up to 256 per centroid
        min_points_per_centroid=1,
        max_points_per_centroid=256,
    )
    km.train(xn)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    # engine hook (auditor.engine): on the Ray engine the assignment runs on the shards
    assign = distributed_nearest_centroid(xn, centroids)
    if assign is None:
        index = faiss.IndexFlatIP(d)
        index.add(centroids)
        _, found = index.search(xn, 1)
        assign = found[:, 0].astype(np.int64)
    return centroids, assign


def knn(index_vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine similarity.

    Returns ``(sims, idx)``, each (n_queries, k') with k' = min(k, n_index), best first;
    ``idx`` indexes rows of ``index_vectors``.
    """
    base = normalize(index_vectors)
    q = normalize(queries)
    if base.shape[1] != q.shape[1]:
        raise ValueError(f"dimension mismatch: index {base.shape[1]}, queries {q.shape[1]}")
    k = int(min(k, base.shape[0]))
    if k <= 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], 0), dtype=np.float32), np.zeros((q.shape[0], 0), dtype=np.int64)
    remote = distributed_knn(base, q, k)  # engine hook (auditor.engine): None on the local engine
    if remote is not None:
        return remote
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    sims, idx = index.search(q, k)
    return sims, idx.astype(np.int64)


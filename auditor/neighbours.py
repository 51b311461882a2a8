"""Nearest-neighbour candidates for the checks: exact search below a size threshold, a
seeded random projection re-ranked by exact cosine above it.

The one home of the search plan, so that every check that scores records by their
neighbours (off-support distances, flipped-response matching, linking records into
groups) makes the same speed/accuracy trade and documents it once.
"""

from __future__ import annotations

import numpy as np

from auditor import index

# candidate search for large inputs (see candidate_knn)
PROJECTION_DIM = 64
CANDIDATE_EXTRA = 16
EXACT_BELOW_PAIRS = 40_000_000


def search_plan(n_base: int, n_queries: int, dim: int) -> int | None:
    """Projection dimension for :func:`candidate_knn` at this size, or None for exact search.

    Exact search is kept below ~4e7 pairs, where it takes well under a second.
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
    """
    n_base = base.shape[0]
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

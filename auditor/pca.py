"""Principal component projection: the one PCA of the project (k-means input, report maps)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# threadpoolctl comes with scikit-learn (a dependency); it bounds BLAS threads locally
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class Projection:
    coords: np.ndarray  # (n, dim) float32: every row on the leading axes
    explained: np.ndarray  # (dim,) share of the fitted rows' variance on each axis


def pca(x: np.ndarray, dim: int, *, fit_rows: int | None = None, rng: np.random.Generator | None = None) -> Projection:
    """Project the rows of ``x`` on their ``dim`` leading principal axes.

    The axes are fitted on at most ``fit_rows`` rows drawn from ``rng`` (all rows when
    ``fit_rows`` is None or not exceeded: a few hundred dimensions are pinned down long
    before 10^4 rows) and every row is projected.  Deterministic: an eigen-decomposition
    of the d x d scatter matrix (same axes as an SVD, cheap for n >> d), each axis signed
    so that its largest component is positive.  Axes beyond the data's dimension are zero.
    """
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    fit = x
    if fit_rows is not None and n > fit_rows:
        if rng is None:
            raise ValueError("pca: fit_rows below the number of rows needs an rng")
        fit = x[np.sort(rng.choice(n, fit_rows, replace=False))]
    # A d x d eigenproblem is too small to gain from BLAS threads, and on shared cores
    # spinning OpenBLAS threads made it 20x slower in measurements: run it on one.
    with threadpool_limits(limits=1, user_api="blas"):
        mean = fit.mean(axis=0, keepdims=True)
        fc = fit - mean
        vals, vecs = np.linalg.eigh((fc.T @ fc).astype(np.float64))
        keep = min(dim, d)
        axes = vecs[:, ::-1][:, :keep]
        # an eigenvector's sign is arbitrary; fix it so the same data always projects the same way
        sign = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(keep)])
        axes = (axes * np.where(sign == 0, 1.0, sign)).astype(np.float32)
        coords = np.ascontiguousarray((x - mean) @ axes)
    total = float(np.clip(vals, 0, None).sum()) or 1.0
    explained = np.clip(vals[::-1][:keep], 0, None) / total
    if keep < dim:
        coords = np.pad(coords, ((0, 0), (0, dim - keep)))
        explained = np.pad(explained, (0, dim - keep))
    return Projection(coords=coords, explained=explained)

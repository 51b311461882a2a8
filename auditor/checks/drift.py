"""Global drift: has the current batch's distribution moved away from the reference?

Two complementary tests on the embeddings:

- ``mmd``: kernel two-sample test (Gretton et al. 2012, JMLR 13) with an RBF kernel whose
  bandwidth is the median pairwise distance (the "median heuristic").  The kernel matrix
  is computed once and all B permutations are evaluated together as one matrix product,
  MMD²_b = w_bᵀ K w_b with w_b = ±1/n signed label weights.  Above ``max_per_side``
  records per side a seeded subsample is tested (documented power cost in
  docs/statistics.md): memory is O(m²) for m = the tested size.
- ``classifier``: classifier two-sample test (Lopez-Paz & Oquab 2017, ICLR): cross-fitted
  logistic regression telling reference from current; out-of-fold AUC, tested with Van
  Elteren's stratified rank-sum test across folds.  Its out-of-fold scores rank which
  current records look least like the reference: those are the finding's record_ids.
"""

from __future__ import annotations

import numpy as np

from auditor.checks import register
from auditor.stats import permutation_p_value, stratified_auc_test
from auditor.types import Finding, Snapshot


def _subsample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, size=cap, replace=False))


def median_bandwidth(z: np.ndarray, rng: np.random.Generator, max_points: int = 2000) -> float:
    """Median pairwise Euclidean distance (on at most ``max_points`` points)."""
    idx = _subsample(len(z), max_points, rng)
    s = z[idx].astype(np.float64)
    sq = (s * s).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * s @ s.T, 0.0)
    iu = np.triu_indices(len(s), k=1)
    med = float(np.sqrt(np.median(d2[iu]))) if len(iu[0]) else 1.0
    return med if med > 0 else 1.0


def rbf_kernel(z: np.ndarray, bandwidth: float) -> np.ndarray:
    """K_ij = exp(-|z_i - z_j|² / (2 σ²)), float32, computed in one GEMM."""
    z = z.astype(np.float32)
    sq = (z * z).sum(1)
    k = z @ z.T
    k *= -2.0
    k += sq[:, None]
    k += sq[None, :]
    np.maximum(k, 0.0, out=k)
    k *= -1.0 / (2.0 * bandwidth * bandwidth)
    np.exp(k, out=k)
    return k


def mmd_permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    permutations: int = 1000,
    seed: int = 0,
    block: int = 200,
) -> tuple[float, float, float, np.ndarray]:
    """Biased MMD² estimate with an RBF kernel and its permutation p-value.

    Returns (mmd2, p_value, bandwidth, null_distribution).  All permutations share the
    kernel matrix; they are evaluated ``block`` at a time as K @ W (W: n × block).
    """
    rng = np.random.default_rng(seed)
    z = np.concatenate([x, y]).astype(np.float32)
    n, nx = len(z), len(x)
    bw = median_bandwidth(z, rng)
    k = rbf_kernel(z, bw)
    w0 = np.where(np.arange(n) < nx, 1.0 / nx, -1.0 / (n - nx)).astype(np.float32)
    observed = float(w0 @ k @ w0)
    null = np.empty(permutations, dtype=np.float64)
    for start in range(0, permutations, block):
        b = min(block, permutations - start)
        w = np.empty((n, b), dtype=np.float32)
        for j in range(b):
            w[:, j] = w0[rng.permutation(n)]
        kw = k @ w
        null[start : start + b] = np.einsum("ij,ij->j", w, kw)
    return observed, permutation_p_value(observed, null), bw, null


@register("mmd")
def mmd(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    permutations: int = 1000,
    max_per_side: int = 5000,
) -> list[Finding]:
    """Kernel two-sample test (RBF MMD, median bandwidth, permutation p-value).

    Says whether the two batches differ anywhere in embedding space; it does not say
    where (the localising checks do).  effect_size is MMD² divided by the permutation
    null's standard deviation (a z-like score).
    """
    rng = np.random.default_rng(seed)
    ri = _subsample(len(ref), max_per_side, rng)
    ci = _subsample(len(cur), max_per_side, rng)
    stat, p, bw, null = mmd_permutation_test(
        ref.embeddings[ri], cur.embeddings[ci], permutations=permutations, seed=seed
    )
    sd = float(null.std()) or 1e-12
    effect = (stat - float(null.mean())) / sd
    sub = "" if len(ri) == len(ref) and len(ci) == len(cur) else f" (tested on {len(ri)}+{len(ci)} subsample)"
    return [
        Finding(
            check="mmd",
            summary=f"global drift: MMD²={stat:.4g}, {effect:.1f} null SDs above the permutation mean, "
            f"p={p:.3g} with B={permutations}{sub}",
            side="current",
            statistic=stat,
            p_value=p,
            effect_size=effect,
            details={
                "bandwidth": bw,
                "permutations": permutations,
                "null_mean": float(null.mean()),
                "null_sd": sd,
                "n_reference_tested": int(len(ri)),
                "n_current_tested": int(len(ci)),
            },
        )
    ]


@register("classifier")
def classifier(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    folds: int = 5,
    top: int = 50,
    C: float = 1.0,
    max_per_side: int = 20000,
) -> list[Finding]:
    """Classifier two-sample test: can a linear model tell current from reference?

    Cross-fitted logistic regression (class-balanced) on the embeddings; the out-of-fold
    AUC is the statistic, its p-value from Van Elteren's test across folds.  record_ids
    are the current records scored most "unlike the reference": those above the 99th
    percentile of the reference's own out-of-fold scores, at most ``top``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    ri = _subsample(len(ref), max_per_side, rng)
    ci = _subsample(len(cur), max_per_side, rng)
    x = np.concatenate([ref.embeddings[ri], cur.embeddings[ci]]).astype(np.float64)
    y = np.concatenate([np.zeros(len(ri), int), np.ones(len(ci), int)])
    n_folds = int(min(folds, np.bincount(y).min()))
    if n_folds < 2:
        return []
    scores = np.zeros(len(y))
    strata = np.zeros(len(y), dtype=int)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=int(rng.integers(2**31)))
    for f, (tr, te) in enumerate(skf.split(x, y)):
        model = LogisticRegression(C=C, class_weight="balanced", max_iter=1000)
        model.fit(x[tr], y[tr])
        scores[te] = model.decision_function(x[te])
        strata[te] = f
    auc, p = stratified_auc_test(scores, y, strata)
    ref_scores, cur_scores = scores[y == 0], scores[y == 1]
    cut = float(np.quantile(ref_scores, 0.99))
    order = np.argsort(-cur_scores)
    atypical = [int(i) for i in order[:top] if cur_scores[i] > cut]
    ids = [cur.ids[ci[i]] for i in atypical]
    return [
        Finding(
            check="classifier",
            summary=f"a linear classifier separates current from reference with out-of-fold "
            f"AUC={auc:.3f} (0.5 = indistinguishable), p={p:.3g}; "
            f"{len(ids)} current records score above the reference's 99th percentile",
            side="current",
            statistic=auc,
            p_value=p,
            effect_size=auc - 0.5,
            record_ids=ids,
            details={
                "folds": n_folds,
                "reference_score_p99": cut,
                "n_above_reference_p99": int((cur_scores > cut).sum()),
                "expected_above_p99": 0.01 * len(cur_scores),
                "examples": [cur.texts[ci[i]][:200] for i in atypical[:5]],
            },
        )
    ]

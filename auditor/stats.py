"""Pure numpy/scipy statistics shared by the checks.

Conventions (see docs/statistics.md):
- permutation p-values are (k + 1) / (B + 1), k = permuted statistics >= observed
  (Phipson & Smyth 2010, "Permutation p-values should never be zero");
- many tests inside one check go through Benjamini-Hochberg (1995);
- the gate splits its family-wise alpha across rules by weight (weighted Bonferroni),
  see auditor/gate.py and auditor/rules.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as _st


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """(k+1)/(B+1): never zero, exact-level under the null."""
    null = np.asarray(null, dtype=float)
    k = int(np.count_nonzero(null >= observed - 1e-12 * max(1.0, abs(observed))))
    return (k + 1) / (null.size + 1)


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values): reject q <= alpha controls FDR at alpha."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    # enforce monotonicity from the largest p downwards
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.clip(q_sorted, 0.0, 1.0)
    return q


def fisher_exact_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher exact p for the 2x2 table [[a, b], [c, d]]: row 1 enriched in col 1.

    Used as: a = current in group, b = reference in group, c = current outside,
    d = reference outside -> small p means the group is over-represented in current.
    """
    # hypergeometric upper tail: P(X >= a), X ~ Hypergeom(M=a+b+c+d, n=a+c, N=a+b)
    return float(_st.hypergeom.sf(a - 1, a + b + c + d, a + c, a + b))


def fisher_exact_less(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher exact p that the group is under-represented in current."""
    return float(_st.hypergeom.cdf(a, a + b + c + d, a + c, a + b))


def stratified_auc_test(
    scores: np.ndarray, labels: np.ndarray, strata: np.ndarray
) -> tuple[float, float]:
    """Van Elteren's stratified Wilcoxon test of AUC > 0.5.

    For cross-fitted classifier scores: within a fold every score comes from the same
    model, trained without those records, so under the null the fold's scores are
    exchangeable between classes and its Mann-Whitney U has a known null mean and
    variance.  Sum U over folds, standardise, one-sided normal p.  Returns (AUC, p).
    """
    u_sum = mean_sum = var_sum = 0.0
    n_pairs = 0.0
    for s in np.unique(strata):
        m = strata == s
        x, y = scores[m & (labels == 1)], scores[m & (labels == 0)]
        n1, n0 = len(x), len(y)
        if n1 == 0 or n0 == 0:
            continue
        allv = np.concatenate([x, y])
        ranks = _st.rankdata(allv)
        u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
        n = n1 + n0
        _, counts = np.unique(allv, return_counts=True)
        tie = (counts**3 - counts).sum() / (n * (n - 1)) if n > 1 else 0.0
        u_sum += u
        mean_sum += n1 * n0 / 2
        var_sum += n1 * n0 / 12 * ((n + 1) - tie)
        n_pairs += n1 * n0
    if n_pairs == 0 or var_sum <= 0:
        return float("nan"), 1.0
    z = (u_sum - mean_sum) / np.sqrt(var_sum)
    return float(u_sum / n_pairs), float(_st.norm.sf(z))



def share_ratio(a: int, b: int, n_cur: int, n_ref: int) -> float:
    """Current share over reference share of a group (``a`` of ``n_cur``, ``b`` of ``n_ref``).

    The Haldane-Anscombe 0.5 keeps the ratio finite for groups absent from one side.
    """
    return ((a + 0.5) / (n_cur + 0.5)) / ((b + 0.5) / (n_ref + 0.5))


def large_shift(a: int, b: int, n_cur: int, n_ref: int, min_ratio: float, min_records: float) -> tuple[bool, bool]:
    """Whether a group's share moved enough to report, as ``(over, under)``: a share ratio
    of ``min_ratio`` in that direction and ``min_records`` records of excess over what the
    other side's share predicts."""
    ratio = share_ratio(a, b, n_cur, n_ref)
    over = ratio >= min_ratio and a - b * n_cur / n_ref >= min_records
    under = 1.0 / ratio >= min_ratio and b - a * n_ref / n_cur >= min_records
    return over, under


def conformal_p(null: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Conformal p-value ``(1 + #{null >= s}) / (n + 1)`` of each score ``s``.

    Exact under exchangeability of the null and test scores (Vovk et al. 2005; Bates et
    al. 2023, Ann. Statist. 51:149), never zero.
    """
    srt = np.sort(np.asarray(null, dtype=np.float64))
    n_ge = srt.size - np.searchsorted(srt, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + n_ge) / (srt.size + 1.0)

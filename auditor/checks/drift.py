"""Global drift: has the current batch's distribution moved away from the reference?

Two complementary tests on the embeddings:

- ``mmd``: kernel two-sample test (Gretton et al. 2012, JMLR 13) with an RBF kernel whose
  bandwidth is the median pairwise distance (the "median heuristic").  The kernel is
  computed in blocks (auditor/kernels.py) and all B permutations are evaluated at once
  against each block, so the n×n matrix is never held.  Up to ``max_per_side`` records per
  side (``gpu_max_per_side`` on a CUDA GPU) the statistic is exact; above it, the test
  uses random Fourier features on every record (``large: rff``, linear time and memory)
  or an exact test on a seeded subsample (``large: subsample``).  Both are exactly valid
  permutation tests; what each costs in power is measured in benchmarks/RESULTS.md.
  Permutations are two-stage (``sequential_p``): ``permutations`` first, and only when
  fewer than ``stop_after`` of them reach the observed value, a fresh test with
  ``max_permutations``, so the p-value can go below the rule's (weighted) gate threshold
  while a run with no change almost always stops after the first stage.
- ``classifier``: classifier two-sample test (Lopez-Paz & Oquab 2017, ICLR): cross-fitted
  logistic regression telling reference from current; out-of-fold AUC, tested with Van
  Elteren's stratified rank-sum test across folds.  Its out-of-fold scores rank which
  current records look least like the reference: those are the finding's record_ids.
"""

from __future__ import annotations

import numpy as np

from auditor import kernels
from auditor.checks import register
from auditor.engine import distributed_mmd_rff
from auditor.kernels import median_bandwidth, rbf_kernel
from auditor.stats import permutation_p_value, stratified_auc_test
from auditor.types import AuditorError, Finding, Snapshot

__all__ = ["classifier", "median_bandwidth", "mmd", "mmd_permutation_test", "rbf_kernel", "sequential_p"]

LARGE_METHODS = ("rff", "subsample")


def _subsample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, size=cap, replace=False))


def mmd_permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    permutations: int = 1000,
    seed: int = 0,
    block: int = 0,
    method: str = "exact",
    features: int = 1024,
    device: str = "cpu",
) -> tuple[float, float, float, np.ndarray]:
    """Biased MMD² with an RBF kernel (median bandwidth) and its permutation p-value.

    Returns (mmd2, p_value, bandwidth, null_distribution).  ``method="exact"`` computes
    the kernel blockwise (O(n²) time, O(n·B) memory); ``method="rff"`` uses ``features``
    random Fourier features (O(n·features·B) time, O(n·features) memory).
    """
    rng = np.random.default_rng(seed)
    if method not in ("exact", "rff"):
        raise ValueError(f"method {method!r} (expected exact or rff)")
    bw = median_bandwidth(np.concatenate([x, y]), rng)
    # --- engine hook (auditor.engine): on the Ray engine the random-feature sums are a
    # distributed pass drawing the same permutations from rng ---
    values = (
        distributed_mmd_rff(
            x, y, permutations=permutations, bandwidth=bw, rng=rng, features=features, device=device
        )
        if method == "rff"
        else None
    )
    if values is None:
        values = kernels.permutation_values(
            x,
            y,
            permutations=permutations,
            bandwidth=bw,
            rng=rng,
            method=method,
            features=features,
            device=device,
            block=block,
        )
    # --- end engine hook ---
    observed, null = float(values[0]), values[1:]
    return observed, permutation_p_value(observed, null), bw, null


def _exceedances(p: float, b: int) -> int:
    """k from a permutation p-value (k + 1) / (b + 1)."""
    return int(round(p * (b + 1))) - 1


def sequential_p(p_first: float, b_first: int, stop_after: int, second: float | None) -> float:
    """The two-stage permutation p-value: the first stage's ``(k+1)/(b+1)`` when at least
    ``stop_after`` permuted statistics reached the observed one, else ``second``, the
    p-value of a separate full permutation test with more permutations.

    Valid (P(p <= u) <= u under the null) with no independence between the stages
    needed.  Let S be "stopped" (first >= (stop_after+1)/(b+1)).  For u below that value,
    only the second test can report p <= u, and P(second <= u) <= u.  For u at or above
    it, not stopping implies first <= stop_after/(b+1) <= u, so P(p <= u) <= P(S, first
    <= u) + P(not S) = P(first <= u) <= u.  A truncated form of Besag & Clifford's (1991,
    Biometrika 78:301) sequential Monte Carlo test: a run with no change almost always
    stops after the first stage, a real shift pays for the second.
    """
    if second is None or _exceedances(p_first, b_first) >= stop_after:
        return p_first
    return second


# With m records a side there are C(2m, m) / 2 distinct labellings up to swapping the sides
# (MMD² is symmetric): 462 at m = 6, so a permutation p cannot go below ~1/462 however
# many permutations are drawn; 1,716 at m = 7.
@register("mmd", min_records=7)
def mmd(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    permutations: int = 1000,
    max_permutations: int = 0,
    stop_after: int = 10,
    max_per_side: int = 5000,
    large: str = "rff",
    features: int = 1024,
    rff_max_per_side: int = 250000,
    gpu_max_per_side: int = 100000,
    device: str = "cpu",
) -> list[Finding]:
    """Kernel two-sample test (RBF MMD, median bandwidth, permutation p-value).

    Says whether the two batches differ anywhere in embedding space; it does not say
    where (the localising checks do).  effect_size is MMD² minus the permutation null's
    mean, in null standard deviations (a z-like score).  Exact up to ``max_per_side``
    records per side (``gpu_max_per_side`` on CUDA); above, ``large`` picks random
    Fourier features on every record (up to ``rff_max_per_side``) or a seeded subsample.
    ``device`` ("cpu", "cuda", "cuda:N" or "auto") is given by the gate, not by a rule.
    Two-stage permutations (see ``sequential_p``): when fewer than ``stop_after`` of the
    first ``permutations`` reach the observed MMD², the p-value is that of a fresh test
    with ``max_permutations`` (smallest p 1/(max_permutations + 1)); 0 (the function's
    default; the default rules set 9,999) or any value <= ``permutations``: one stage.
    """
    if large not in LARGE_METHODS:
        raise AuditorError(f"mmd: large={large!r} (expected one of {', '.join(LARGE_METHODS)})")
    dev = kernels.resolve_device(device)
    cap = gpu_max_per_side if dev != "cpu" else max_per_side
    rng = np.random.default_rng(seed)
    biggest = max(len(ref), len(cur))
    method = "exact" if biggest <= cap or large == "subsample" else "rff"
    per_side = cap if method == "exact" else rff_max_per_side
    ri = _subsample(len(ref), per_side, rng)
    ci = _subsample(len(cur), per_side, rng)

    def stage(b: int, stage_seed: int) -> tuple[float, float, float, np.ndarray]:
        return mmd_permutation_test(
            ref.embeddings[ri],
            cur.embeddings[ci],
            permutations=b,
            seed=stage_seed,
            method=method,
            features=features,
            device=dev,
        )

    stat, p, bw, null = stage(permutations, seed)
    used = permutations
    if max_permutations > permutations and _exceedances(p, permutations) < stop_after:
        # not stopped: the p-value is a fresh, complete test's with more permutations (sequential_p)
        stat, p, bw, null = stage(max_permutations, seed + 7919)
        used = max_permutations
    sd = float(null.std()) or 1e-12
    effect = (stat - float(null.mean())) / sd
    how = "exact" if method == "exact" else f"random-feature ({features} features)"
    sub = "" if len(ri) == len(ref) and len(ci) == len(cur) else f", on a {len(ri)}+{len(ci)} subsample"
    return [
        Finding(
            check="mmd",
            summary=f"global drift: MMD²={stat:.4g}, {effect:.1f} null SDs above the permutation mean, "
            f"p={p:.3g} with B={used} ({how}{sub})",
            side="current",
            statistic=stat,
            p_value=p,
            effect_size=effect,
            details={
                "bandwidth": bw,
                "permutations": used,
                "first_stage_permutations": permutations,
                "method": method,
                "features": features if method == "rff" else None,
                "device": dev,
                "null_mean": float(null.mean()),
                "null_sd": sd,
                "n_reference_tested": int(len(ri)),
                "n_current_tested": int(len(ci)),
            },
        )
    ]


# Van Elteren's test over min(5, m) stratified folds (small folds mix the classes unevenly):
# even a perfect out-of-fold separation gives p = 2.0e-3 at m = 8 records a side, 7.4e-4 at 9.
@register("classifier", min_records=9)
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
    # above max_per_side the test sees a seeded subsample: the report says so
    sub = "" if len(ri) == len(ref) and len(ci) == len(cur) else f" (on a {len(ri)}+{len(ci)} subsample)"
    return [
        Finding(
            check="classifier",
            summary=f"a linear classifier separates current from reference with out-of-fold "
            f"AUC={auc:.3f} (0.5 = indistinguishable), p={p:.3g}; "
            f"{len(ids)} current records score above the reference's 99th percentile{sub}",
            side="current",
            statistic=auc,
            p_value=p,
            effect_size=auc - 0.5,
            record_ids=tuple(ids),
            details={
                "folds": n_folds,
                "reference_score_p99": cut,
                "n_above_reference_p99": int((cur_scores > cut).sum()),
                "expected_above_p99": 0.01 * len(cur_scores),
                "examples": [cur.texts[ci[i]][:200] for i in atypical[:5]],
                "n_reference_tested": int(len(ri)),
                "n_current_tested": int(len(ci)),
            },
        )
    ]

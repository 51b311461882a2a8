"""Off-support records: current records farther from the reference than the reference is from itself.

Method (split conformal outlier detection; Vovk et al. 2005, Lei et al. 2018; Bates et al.
2023, "Testing for outliers with conformal p-values", Ann. Statist. 51:149):

1. The reference is split at random (``seed``) into an *index* half and a *calibration*
   half.  Null scores: each calibration record's distance (1 - cosine) to its nearest index
   record.  Test scores: each current record's distance to its nearest index record.
   Given the index half, calibration and current scores are i.i.d. under the null (both
   inputs samples of one population), which is what makes steps 2-3 exact.  The obvious
   alternative, leave-one-out distances within the whole reference, is not: mutual
   nearest neighbours share one distance, and on Alpaca splits that made the count of
   flagged records ~10% more variable than the Beta-Binomial below and the test
   anti-conservative at small alpha.  Halving the index costs little power: a record from
   another distribution is far from every reference record.
2. Per-record conformal p-value ``(1 + #{null >= d}) / (n_cal + 1)``.
3. A record is off-support when ``p <= alpha_flag``, i.e. its distance exceeds the r-th
   largest null distance, r = floor(alpha_flag (n_cal + 1)).  Every current record is
   compared with the same threshold, so the count of flagged records is over-dispersed
   relative to Binomial(n_cur, alpha_flag): the flagged fraction is the coverage of an
   order statistic, Beta(r, n_cal - r + 1), and the count is exactly
   Beta-Binomial(n_cur, r, n_cal - r + 1) under the null.
4. Off-support records are grouped: two are linked when they are closer to each other than
   either is to its nearest reference record (together they occupy a region the reference
   does not cover); connected components are the groups.  A group of g records is judged by
   P(count >= g) under the same null: valid because a group is never larger than the
   overall count (conservative for groups, yet a coherent new subpopulation of a few dozen
   records is far beyond what the null allows).
5. The overall test and every group of at least ``min_group`` records go through
   Benjamini-Hochberg together; ``p_value`` is the adjusted one.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.stats import betabinom

from auditor import index
from auditor.checks import register
from auditor.stats import benjamini_hochberg
from auditor.textutil import excerpt
from auditor.types import Finding, Snapshot

CHECK = "off_support"

EXAMPLES = 3
EXAMPLE_CHARS = 200
# neighbours searched among flagged records when linking them into groups: a group is a
# connected component, so a few links per record are enough to connect it
GROUP_LINKS = 16
# candidate search for large inputs (see candidate_knn)
PROJECTION_DIM = 64
CANDIDATE_EXTRA = 16
EXACT_BELOW_PAIRS = 40_000_000


def _truncate(text: str, n: int = EXAMPLE_CHARS) -> str:
    return excerpt(text, n)


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


def conformal_p(null: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(1 + #{null >= s}) / (n + 1) for each score s."""
    srt = np.sort(np.asarray(null, dtype=np.float64))
    n_ge = srt.size - np.searchsorted(srt, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + n_ge) / (srt.size + 1.0)


def _groups(emb: np.ndarray, nn_ref_sim: np.ndarray, *, seed: int) -> np.ndarray:
    """Component label of each row: rows linked when closer to each other than to the reference."""
    m = emb.shape[0]
    if m == 1:
        return np.zeros(1, dtype=np.int64)
    plan = search_plan(m, m, emb.shape[1])
    sims, idx = candidate_knn(emb, emb, min(m, GROUP_LINKS + 1), proj_dim=plan, seed=seed)
    rows = np.repeat(np.arange(m), idx.shape[1])
    cols = idx.ravel()
    s = sims.ravel()
    keep = (
        (cols != rows) & (cols >= 0) & (s >= np.maximum(nn_ref_sim[rows], nn_ref_sim[np.clip(cols, 0, None)]))
    )
    graph = sparse.coo_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(m, m))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {}
    q = np.quantile(x.astype(np.float64), [0.05, 0.5, 0.95])
    return {"q05": round(float(q[0]), 4), "q50": round(float(q[1]), 4), "q95": round(float(q[2]), 4)}


@register(CHECK)
def off_support(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    alpha_flag: float = 0.01,
    min_group: int = 3,
    report_alpha: float = 0.05,
) -> list[Finding]:
    """Current records farther from every reference record than the reference's own spacing allows.

    Split conformal: a random half of the reference (``seed``) is searched, the other half
    calibrates; a current record is off-support when its nearest-neighbour distance exceeds
    the calibration records' distances (conformal p <= ``alpha_flag``).  The number of
    off-support records is tested against its exact Beta-Binomial null, and groups of at
    least ``min_group`` off-support records that are closer to each other than to the
    reference are reported with their records.  The overall test and the group tests are
    Benjamini-Hochberg adjusted together; findings with adjusted p <= ``report_alpha`` are
    returned.
    """
    n_ref, n_cur = len(ref), len(cur)
    if n_ref < 2 or n_cur == 0:
        return []
    ref_emb = np.asarray(ref.embeddings)
    cur_emb = np.asarray(cur.embeddings)
    # split conformal: half of the reference is the index, the other half calibrates
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_ref)
    n_index = (n_ref + 1) // 2
    index_rows, calib_rows = perm[:n_index], perm[n_index:]
    n_cal = int(calib_rows.size)
    r = int(math.floor(alpha_flag * (n_cal + 1) + 1e-9))
    if r < 1:
        # too few reference records to call anything off-support at this level
        return []
    # one search plan for calibration and test records: their scores must be one function
    plan = search_plan(n_index, n_cal + n_cur, ref_emb.shape[1])
    null_sim, _ = candidate_knn(ref_emb[index_rows], ref_emb[calib_rows], 1, proj_dim=plan, seed=seed)
    null_d = 1.0 - null_sim[:, 0].astype(np.float64)
    split_sim, _ = candidate_knn(ref_emb[index_rows], cur_emb, 1, proj_dim=plan, seed=seed)
    split_d = 1.0 - split_sim[:, 0].astype(np.float64)
    p_rec = conformal_p(null_d, split_d)
    flagged = np.flatnonzero(p_rec <= alpha_flag + 1e-12)
    n_flag = int(flagged.size)
    if n_flag == 0:
        return []
    # for grouping and the report: distance to the nearest record of the whole reference
    sims, nn_idx = candidate_knn(
        ref_emb, cur_emb[flagged], 1, proj_dim=search_plan(n_ref, n_flag, ref_emb.shape[1]), seed=seed
    )
    cur_sim = np.full(n_cur, np.nan)
    cur_sim[flagged] = sims[:, 0]
    cur_nn = np.full(n_cur, -1, dtype=np.int64)
    cur_nn[flagged] = nn_idx[:, 0]
    cur_d = 1.0 - cur_sim

    a, b = r, n_cal - r + 1
    expected = n_cur * a / (a + b)

    def tail(k: int) -> float:
        return float(betabinom.sf(k - 1, n_cur, a, b))

    labels = _groups(cur_emb[flagged], cur_sim[flagged], seed=seed)
    groups = [flagged[labels == g] for g in np.unique(labels)]
    groups = [g for g in groups if g.size >= min_group]
    groups.sort(key=lambda g: (-g.size, int(g[0])))

    p_raw = [tail(n_flag)] + [tail(int(g.size)) for g in groups]
    q = benjamini_hochberg(p_raw)
    threshold = float(np.sort(null_d)[::-1][r - 1])
    common = {
        "n_reference": n_ref,
        "n_reference_calibration": n_cal,
        "n_current": n_cur,
        "alpha_flag": alpha_flag,
        "distance_threshold": round(threshold, 4),
        "n_off_support": n_flag,
        "expected_off_support": round(expected, 2),
        "n_tests": len(p_raw),
        # distances to the index half of the reference, the scale the threshold lives on
        "reference_calibration_nn_distance": _quantiles(null_d),
        "current_nn_distance": _quantiles(split_d),
        "method": "split-conformal p per record (half the reference indexed, half "
        "calibrates); Beta-Binomial(n_current, r, n_calibration - r + 1) null for counts; "
        "Benjamini-Hochberg across the overall test and the groups",
    }

    def examples(rows: np.ndarray) -> list[dict[str, object]]:
        # farthest first: the clearest cases of what the reference does not cover
        order = rows[np.argsort(cur_sim[rows], kind="stable")][:EXAMPLES]
        return [
            {
                "id": cur.ids[i],
                "text": _truncate(cur.texts[i]),
                "nn_distance": round(float(cur_d[i]), 4),
                "nearest_reference_id": ref.ids[int(cur_nn[i])],
                "nearest_reference_text": _truncate(ref.texts[int(cur_nn[i])]),
            }
            for i in order
        ]

    findings: list[Finding] = []
    if q[0] <= report_alpha:
        findings.append(
            Finding(
                check=CHECK,
                summary=(
                    f"{n_flag} current records lie outside the reference's support "
                    f"(expected {expected:.1f} under the null)"
                ),
                side="current",
                record_ids=tuple(cur.ids[i] for i in flagged[np.argsort(cur_sim[flagged], kind="stable")]),
                statistic=float(n_flag),
                p_value=float(q[0]),
                effect_size=float(n_flag / expected),
                details={
                    **common,
                    "scope": "overall",
                    "p_raw": p_raw[0],
                    "off_support_nn_distance": _quantiles(cur_d[flagged]),
                    "examples": examples(flagged),
                },
            )
        )
    for j, g in enumerate(groups, start=1):
        if q[j] > report_alpha:
            continue
        sub = cur_emb[g]
        centroid = sub.mean(axis=0)
        cohesion = float(np.mean(sub @ (centroid / (np.linalg.norm(centroid) + 1e-12))))
        findings.append(
            Finding(
                check=CHECK,
                summary=(
                    f"group of {g.size} current records outside the reference's support, "
                    f"closer to each other than to any reference record"
                ),
                side="current",
                record_ids=tuple(cur.ids[i] for i in g),
                statistic=float(g.size),
                p_value=float(q[j]),
                effect_size=float(g.size / expected),
                details={
                    **common,
                    "scope": "group",
                    "group_size": int(g.size),
                    "p_raw": p_raw[j],
                    "group_nn_distance": _quantiles(cur_d[g]),
                    "mean_cosine_to_group_centroid": round(cohesion, 4),
                    "examples": examples(g),
                },
            )
        )
    return findings

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
from scipy.stats import betabinom

from auditor.checks import register
from auditor.graph import components
from auditor.neighbours import candidate_knn, neighbour_pairs, search_plan
from auditor.stats import benjamini_hochberg, conformal_p
from auditor.textutil import excerpt
from auditor.types import Finding, Snapshot

CHECK = "off_support"

EXAMPLES = 3
# neighbours searched among flagged records when linking them into groups: a group is a
# connected component, so a few links per record are enough to connect it
GROUP_LINKS = 16


def _groups(emb: np.ndarray, nn_ref_sim: np.ndarray, *, seed: int) -> np.ndarray:
    """Component label of each row: rows linked when closer to each other than to the reference."""
    rows, cols, sims = neighbour_pairs(emb, GROUP_LINKS, seed=seed)
    keep = sims >= np.maximum(nn_ref_sim[rows], nn_ref_sim[cols])
    return components(rows[keep], cols[keep], emb.shape[0])


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {}
    q = np.quantile(x.astype(np.float64), [0.05, 0.5, 0.95])
    return {"q05": round(float(q[0]), 4), "q50": round(float(q[1]), 4), "q95": round(float(q[2]), 4)}


# The reference is split in halves and r = floor(alpha_flag (n_cal + 1)) must be >= 1:
# at alpha_flag = 0.01 that takes 99 calibration records, 198 in the reference.  The
# current side alone would need 2 (every one flagged: p = 1/C(101, 2) = 2e-4), but one
# number serves both sides, and the reference's need is the binding one.
@register(CHECK, min_records=198)
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
                "text": excerpt(cur.texts[i]),
                "nn_distance": round(float(cur_d[i]), 4),
                "nearest_reference_id": ref.ids[int(cur_nn[i])],
                "nearest_reference_text": excerpt(ref.texts[int(cur_nn[i])]),
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

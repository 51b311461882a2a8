"""Near-duplicate groups: is the current batch padded with copies of a few records?

Method:

1. Near-duplicate graph on the union of reference and current records, built without
   looking at which input a record came from: each record's ``k`` nearest neighbours by
   embedding cosine are candidates; a candidate pair is a near-duplicate edge when its
   cosine is >= ``cosine_threshold`` AND the exact Jaccard similarity of the two texts'
   word 3-shingle sets is >= ``jaccard_threshold``.  The lexical check keeps paraphrases
   and short templated texts that an encoder maps close together from counting as copies;
   on candidate pairs only, exact Jaccard is cheap, so no MinHash estimate is needed.
2. Overall rate: the statistic is the number of current records with a near-duplicate
   partner *inside the current batch*.  Its null distribution comes from re-splitting the
   union at random into inputs of the original sizes (the graph does not change, only the
   labels), so the reference's own duplicate rate is the baseline and the test is exact
   for any dependence between duplicates; p = (k + 1) / (B + 1).
3. Per group: each connected component of the union graph holds S records, s of them
   current.  A label-blind partition makes s hypergeometric under the null, so a one-sided
   Fisher exact test asks whether the group is abnormally concentrated in the current batch
   (a group of 15 edited copies that the reference does not have gives p ~ 2^-15 at equal
   sizes).  Components too small to ever reach ``min_attainable`` are not tested (a
   label-blind filter, Bourgon et al. 2010), and the rest go through Benjamini-Hochberg.
4. The two families (overall, groups) share the check's level by Bonferroni: each
   finding's ``p_value`` is 2 x its family's p (BH-adjusted for groups), capped at 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.stats import hypergeom

from auditor import index
from auditor.checks import register
from auditor.stats import benjamini_hochberg, permutation_p_value
from auditor.types import Finding, Snapshot

CHECK = "near_duplicates"

EXAMPLES = 3
EXAMPLE_CHARS = 200
# pairwise statistics of a group are computed on at most this many members
PAIRWISE_MAX = 50
_WORD = re.compile(r"\w+")


def _truncate(text: str, n: int = EXAMPLE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def shingles(text: str, n: int = 3) -> frozenset[str]:
    """Word n-shingles of lower-cased text; texts shorter than n words give one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def near_duplicate_edges(
    emb: np.ndarray,
    texts: Sequence[str],
    *,
    k: int,
    cosine_threshold: float,
    jaccard_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(i, j, cosine, jaccard)`` with i < j between near-duplicate rows."""
    n = emb.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty, np.zeros(0), np.zeros(0)
    sims, idx = index.knn(emb, emb, min(n, k + 1))
    rows = np.repeat(np.arange(n), idx.shape[1])
    cols = idx.ravel()
    s = sims.ravel().astype(np.float64)
    keep = (cols >= 0) & (cols != rows) & (s >= cosine_threshold)
    a, b, s = rows[keep], cols[keep], s[keep]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    # each pair can be found from both ends: keep one copy
    pair_key = lo * n + hi
    _, first = np.unique(pair_key, return_index=True)
    lo, hi, s = lo[first], hi[first], s[first]
    cache: dict[int, frozenset[str]] = {}

    def sh(i: int) -> frozenset[str]:
        got = cache.get(i)
        if got is None:
            got = cache[i] = shingles(texts[i])
        return got

    jac = np.array([jaccard(sh(int(i)), sh(int(j))) for i, j in zip(lo, hi)], dtype=np.float64)
    ok = jac >= jaccard_threshold
    return lo[ok], hi[ok], s[ok], jac[ok]


def _within_partnered(lo: np.ndarray, hi: np.ndarray, is_cur: np.ndarray) -> np.ndarray:
    """Mask of nodes that have a partner with the same label as ``is_cur`` marks True."""
    both = is_cur[lo] & is_cur[hi]
    out = np.zeros(is_cur.shape[0], dtype=bool)
    out[lo[both]] = True
    out[hi[both]] = True
    return out


def _permutation_null(
    lo: np.ndarray, hi: np.ndarray, n_total: int, n_cur: int, *, permutations: int, seed: int
) -> np.ndarray:
    """Number of current records with a within-current partner, under random re-splits."""
    nodes, inv = np.unique(np.concatenate([lo, hi]), return_inverse=True)
    n_nodes = nodes.size
    a, b = inv[: lo.size], inv[lo.size :]
    # incidence matrix: counts within-current edges per node for many label draws at once
    n_edges = a.size
    inc = sparse.csr_matrix(
        (np.ones(2 * n_edges), (np.concatenate([a, b]), np.tile(np.arange(n_edges), 2))),
        shape=(n_nodes, n_edges),
    )
    rng = np.random.default_rng(seed)
    # Labels of the involved nodes under a uniformly random split of all n_total records:
    # draw them one node at a time from an urn of n_cur "current" and n_total - n_cur
    # "reference" balls, for all permutations at once (exact; cost ~ nodes x permutations).
    lab = np.empty((permutations, n_nodes), dtype=bool)
    left_cur = np.full(permutations, float(n_cur))
    for t in range(n_nodes):
        draw = rng.random(permutations) * (n_total - t) < left_cur
        lab[:, t] = draw
        left_cur -= draw
    out = np.empty(permutations, dtype=np.int64)
    chunk = max(1, min(permutations, 4_000_000 // max(1, n_edges + n_nodes)))
    for start in range(0, permutations, chunk):
        block = lab[start : start + chunk]
        both = (block[:, a] & block[:, b]).astype(np.float64)
        deg = (inc @ both.T).T
        out[start : start + block.shape[0]] = (deg > 0).sum(axis=1)
    return out


def _pairwise_means(emb: np.ndarray, texts: Sequence[str]) -> tuple[float, float]:
    m = emb.shape[0]
    if m < 2:
        return float("nan"), float("nan")
    cos = emb @ emb.T
    iu = np.triu_indices(m, 1)
    sh = [shingles(t) for t in texts]
    jac = [jaccard(sh[i], sh[j]) for i, j in zip(*iu)]
    return float(np.mean(cos[iu])), float(np.mean(jac))


@register(CHECK)
def near_duplicates(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    cosine_threshold: float = 0.92,
    jaccard_threshold: float = 0.5,
    k: int = 32,
    permutations: int = 1999,
    min_attainable: float = 0.001,
    report_alpha: float = 0.05,
) -> list[Finding]:
    """Groups of near-duplicate records more common in the current batch than in the reference.

    Near-duplicates: embedding cosine >= ``cosine_threshold`` among each record's ``k``
    nearest neighbours, confirmed by word 3-shingle Jaccard >= ``jaccard_threshold``; groups
    are connected components of the union of both inputs.  Tests (i) whether more current
    records have a near-duplicate partner inside the current batch than random re-splits of
    the union give (permutation, ``permutations`` draws), and (ii) per group whether its
    current share is too high (hypergeometric, Benjamini-Hochberg).  The two families are
    Bonferroni-combined; findings with p_value <= ``report_alpha`` are returned.
    """
    n_ref, n_cur = len(ref), len(cur)
    n_total = n_ref + n_cur
    if n_ref == 0 or n_cur < 2:
        return []
    emb = np.concatenate([np.asarray(ref.embeddings), np.asarray(cur.embeddings)], axis=0)
    texts = tuple(ref.texts) + tuple(cur.texts)
    lo, hi, cos, jac = near_duplicate_edges(
        emb, texts, k=k, cosine_threshold=cosine_threshold, jaccard_threshold=jaccard_threshold
    )
    if lo.size == 0:
        return []
    is_cur = np.zeros(n_total, dtype=bool)
    is_cur[n_ref:] = True
    partnered_cur = _within_partnered(lo, hi, is_cur)
    partnered_ref = _within_partnered(lo, hi, ~is_cur)
    observed = int(partnered_cur.sum())
    ref_rate = float(partnered_ref.sum() / n_ref)
    cur_rate = observed / n_cur
    common = {
        "n_reference": n_ref,
        "n_current": n_cur,
        "cosine_threshold": cosine_threshold,
        "jaccard_threshold": jaccard_threshold,
        "reference_duplicate_rate": round(ref_rate, 5),
        "current_duplicate_rate": round(cur_rate, 5),
    }
    findings: list[Finding] = []

    # (i) overall: records with a within-current partner vs random re-splits
    if observed > 0:
        null = _permutation_null(lo, hi, n_total, n_cur, permutations=permutations, seed=seed)
        p_perm = permutation_p_value(float(observed), null.astype(float))
        p_overall = min(1.0, 2.0 * p_perm)
        if p_overall <= report_alpha:
            rows = np.flatnonzero(partnered_cur[n_ref:])
            expected = float(null.mean())
            findings.append(
                Finding(
                    check=CHECK,
                    summary=(
                        f"{observed} current records have a near-duplicate in the current batch "
                        f"({cur_rate:.1%} vs {ref_rate:.1%} in the reference)"
                    ),
                    side="current",
                    record_ids=tuple(cur.ids[i] for i in rows),
                    statistic=float(observed),
                    p_value=p_overall,
                    effect_size=float(observed / max(expected, 1.0)),
                    details={
                        **common,
                        "scope": "overall",
                        "p_raw": p_perm,
                        "expected_under_resplit": round(expected, 2),
                        "permutations": permutations,
                        "method": "permutation test (random re-splits of the union, fixed "
                        "near-duplicate graph); Bonferroni x2 with the group family",
                        "examples": [_truncate(cur.texts[i]) for i in rows[:EXAMPLES]],
                    },
                )
            )

    # (ii) groups: connected components of the union graph, current share hypergeometric
    graph = sparse.coo_matrix((np.ones(lo.size), (lo, hi)), shape=(n_total, n_total))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    tests: list[tuple[np.ndarray, int, int, float]] = []
    log_share = math.log(n_cur / n_total)
    for c in np.flatnonzero(sizes >= 2):
        size = int(sizes[c])
        # smallest p this component could ever give is P(all current) ~ share^size: a
        # label-blind filter that drops pairs and triples which can never be significant
        if size * log_share > math.log(min_attainable) + 1e-9:
            continue
        members = np.flatnonzero(comp == c)
        s = int(is_cur[members].sum())
        p = float(hypergeom.sf(s - 1, n_total, n_cur, size))
        tests.append((members, s, size, p))
    if tests:
        q = benjamini_hochberg([t[3] for t in tests])
        for (members, s, size, p), qv in sorted(zip(tests, q), key=lambda t: (t[0][3], int(t[0][0][0]))):
            p_adj = min(1.0, 2.0 * float(qv))
            if p_adj > report_alpha or s < 2:
                continue
            rows = members[members >= n_ref] - n_ref
            ref_rows = members[members < n_ref]
            mean_cos, mean_jac = _pairwise_means(
                np.asarray(cur.embeddings)[rows[:PAIRWISE_MAX]], [cur.texts[i] for i in rows[:PAIRWISE_MAX]]
            )
            expected = size * n_cur / n_total
            findings.append(
                Finding(
                    check=CHECK,
                    summary=(
                        f"near-duplicate group of {s} current records "
                        f"({size - s} in the reference; {expected:.1f} current expected)"
                    ),
                    side="current",
                    record_ids=tuple(cur.ids[i] for i in rows),
                    statistic=float(s),
                    p_value=p_adj,
                    effect_size=float(s / expected),
                    details={
                        **common,
                        "scope": "group",
                        "p_raw": p,
                        "n_tests": len(tests),
                        "group_size_current": s,
                        "group_size_reference": int(size - s),
                        "expected_current": round(expected, 2),
                        "mean_pairwise_cosine": round(mean_cos, 4),
                        "mean_pairwise_jaccard": round(mean_jac, 4),
                        "reference_ids": [ref.ids[i] for i in ref_rows[:20]],
                        "method": "one-sided hypergeometric (Fisher) per component of the "
                        "label-blind union graph; Benjamini-Hochberg; Bonferroni x2 with the "
                        "overall test",
                        "examples": [_truncate(cur.texts[i]) for i in rows[:EXAMPLES]],
                    },
                )
            )
    findings.sort(key=lambda f: (f.p_value if f.p_value is not None else 1.0, -len(f.record_ids)))
    return findings

"""Near-duplicate groups: is the current batch padded with copies of a few records?

Method:

1. Near-duplicate graph on the union of reference and current records, built without
   looking at which input a record came from.  Candidate pairs come from MinHash LSH over
   word 3-shingles (seeded hash family; sub-quadratic, unlike an all-pairs embedding
   search, which costs ~4x a 10k x 10k matrix product at 10,000 records a side); a
   candidate is a near-duplicate edge when its embedding cosine is >= ``cosine_threshold``
   AND the exact Jaccard similarity of its word 3-shingle sets is >= ``jaccard_threshold``.
   The lexical check keeps paraphrases and short templated texts that an encoder maps
   close together from counting as copies.  LSH misses a pair at the Jaccard threshold
   with probability 0.3% (far less for closer copies, and a group stays connected
   through its other pairs); since the graph never sees the labels, a miss can cost power
   but never calibration.
2. The overall near-duplicate *rate* is not tested: a topic boost raises it without any
   copy being amplified, and a reviewer reads "27.5% vs 22.4% have a near-duplicate" as
   an attack.  Only groups are findings; both rates are kept in each finding's details.
3. Per group: each connected component of the union graph holds S records, s of them
   current.  A label-blind partition makes s hypergeometric under the null, so a one-sided
   Fisher exact test asks whether the group is abnormally concentrated in the current batch
   (a group of 15 edited copies that the reference does not have gives p ~ 2^-15 at equal
   sizes).  Components too small to ever reach ``min_attainable`` are not tested (a
   label-blind filter, Bourgon et al. 2010), and the rest go through Benjamini-Hochberg.
4. Amplified responses: when both inputs have responses, records whose long responses
   (>= ``min_response_words`` words; short answers such as "Positive" repeat honestly)
   are near-duplicates (response-view cosine and shingle Jaccard; lexical only when the
   view is absent) are linked in the same union graph, so one answer given to many
   different prompts (a backdoor's fixed target response) forms a group tested as in 3.
   Such a group is reported with ``scope="response_group"`` and the shared response.
5. The group tests use the check's whole level (no split with a rate test), so a group
   of s records all in current reaches about share^s: 2^-10 = 9.7e-4 for 10 of 2,000
   vs 2,000, below the default gate (0.01 / 9) after BH over a handful of testable groups.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy.stats import hypergeom

from auditor import index
from auditor.checks import register
from auditor.engine import distributed_lsh
from auditor.graph import components
from auditor.minhash import (
    WORD_RE,
    jaccard,
    lsh_candidate_pairs,
    pair_jaccard,
    shingle_hashes,
    shingles,
    signatures,
    words,
)
from auditor.stats import benjamini_hochberg
from auditor.textutil import excerpt
from auditor.types import Finding, Snapshot

CHECK = "near_duplicates"

EXAMPLES = 3
# pairwise statistics of a group are computed on at most this many members
PAIRWISE_MAX = 50
# two prompts whose word sets overlap this much are edits of one prompt (group summaries)
PROMPT_SAME_WORDS = 0.7
# MinHash LSH: 20 bands of 2 rows (40 hash functions): a pair at Jaccard 0.5 is a
# candidate with probability 1 - 0.75^20 = 0.997, one at 0.05 with probability 0.05
_BANDS = 20
_ROWS = 2


def near_duplicate_edges(
    emb: np.ndarray | None,
    texts: Sequence[str],
    *,
    cosine_threshold: float,
    jaccard_threshold: float,
    seed: int = 0,
    word_jaccard_threshold: float | None = None,
    word_cosine_threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(i, j, cosine, jaccard)``, i < j, between near-duplicate rows.

    Candidates come from MinHash LSH on word 3-shingles (sub-quadratic, and a pair at the
    Jaccard threshold 0.5 is a candidate with probability 0.997); each candidate is then
    checked exactly: embedding cosine >= ``cosine_threshold`` and shingle Jaccard >=
    ``jaccard_threshold``.  The Jaccard check compares sets of 32-bit shingle hashes, equal
    to the string sets of :func:`shingles` up to hash collisions (~1e-6 per pair).  With
    ``emb=None`` (no embeddings of these texts) the test is lexical only and ``cosine`` is
    NaN.

    With ``word_jaccard_threshold``, a candidate that fails the shingle test still counts
    when the Jaccard of its two word *sets* reaches that threshold: in a record of 15
    words, two one-word edits break up to 6 of its 13 shingles (Jaccard ~0.4) while
    leaving its word set nearly whole, so near-copies of short records would otherwise
    split off their group.  Such a word-set match needs only ``word_cosine_threshold``
    (when given, below ``cosine_threshold``) of embedding cosine: the encoder moves a
    25-word record with two inserted words to cosine ~0.8-0.9 of its original, so copies
    of short records split into small sub-groups that are too small to test, while the
    cosine floor still keeps records that share many words but say different things
    apart.
    """
    n = len(texts) if emb is None else emb.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty, np.zeros(0), np.zeros(0)
    # --engine ray hook (auditor.engine): the MinHash pass over every text runs on the
    # cluster and returns the same candidate pairs; None runs it here
    remote = distributed_lsh(texts, bands=_BANDS, rows=_ROWS, seed=seed)
    if remote is None:
        values, starts = shingle_hashes(texts)
        sig = signatures(values, starts, num_perm=_BANDS * _ROWS, seed=seed)
        lo, hi = lsh_candidate_pairs(sig, bands=_BANDS, rows=_ROWS)
    else:
        lo, hi, values, starts = remote
    cos = np.full(lo.size, np.nan, dtype=np.float64)
    if emb is not None:
        step = 8192  # pairs per chunk: two (step, dim) gathers
        for start in range(0, lo.size, step):
            sl = slice(start, start + step)
            # normalised per chunk: no full normalised copy of the embeddings
            cos[sl] = np.einsum("ij,ij->i", index.normalize(emb[lo[sl]]), index.normalize(emb[hi[sl]]))
        floor = cosine_threshold
        if word_jaccard_threshold is not None and word_cosine_threshold is not None:
            floor = min(floor, word_cosine_threshold)
        keep = cos >= floor
        lo, hi, cos = lo[keep], hi[keep], cos[keep]
    jac = pair_jaccard(values, starts, lo, hi)
    # pairs below cosine_threshold (kept only for the word-set path) need the word-set match
    strong = np.ones(lo.size, dtype=bool) if emb is None else cos >= cosine_threshold
    ok = (jac >= jaccard_threshold) & strong
    if word_jaccard_threshold is not None and not ok.all():
        for e in np.flatnonzero(~ok):
            wj = jaccard(frozenset(words(texts[int(lo[e])])), frozenset(words(texts[int(hi[e])])))
            if wj >= word_jaccard_threshold:
                ok[e] = True
                jac[e] = wj
    return lo[ok], hi[ok], cos[ok], jac[ok]


def _within_partnered(lo: np.ndarray, hi: np.ndarray, is_cur: np.ndarray) -> np.ndarray:
    """Mask of nodes that have a partner with the same label as ``is_cur`` marks True."""
    both = is_cur[lo] & is_cur[hi]
    out = np.zeros(is_cur.shape[0], dtype=bool)
    out[lo[both]] = True
    out[hi[both]] = True
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


def response_edges(
    ref: Snapshot,
    cur: Snapshot,
    *,
    cosine_threshold: float,
    jaccard_threshold: float,
    min_words: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]] | None:
    """Near-duplicate edges between the union's long responses, in union row numbers.

    ``None`` when either input lacks responses.  Responses under ``min_words`` words are
    left out: short answers ("Positive", "Yes", "4") repeat honestly across prompts.  The
    response view's embeddings are used when both inputs have it, else the test is lexical.
    """
    r_ref, r_cur = ref.batch.responses, cur.batch.responses
    if r_ref is None or r_cur is None:
        return None
    responses = tuple(r_ref) + tuple(r_cur)
    # polars counts words in native code (a Python regex loop costs ~0.7 s at 20,000)
    n_words = (
        pl.Series("r", list(responses), dtype=pl.String).str.count_matches(WORD_RE.pattern).fill_null(0).to_numpy()
    )
    long_rows = np.flatnonzero(n_words >= min_words)
    empty = np.zeros(0, dtype=np.int64)
    if long_rows.size < 2:
        return empty, empty, responses
    v_ref, v_cur = ref.views.get("response"), cur.views.get("response")
    emb = None
    if v_ref is not None and v_cur is not None:
        emb = np.concatenate([np.asarray(v_ref), np.asarray(v_cur)], axis=0)[long_rows]
    lo, hi, _, _ = near_duplicate_edges(
        emb,
        [responses[i] for i in long_rows],
        cosine_threshold=cosine_threshold,
        jaccard_threshold=jaccard_threshold,
        seed=seed + 1,
    )
    return long_rows[lo], long_rows[hi], responses


def _distinct(texts: Sequence[str], threshold: float = PROMPT_SAME_WORDS) -> int:
    """Number of groups of different texts: word-set Jaccard >= ``threshold`` links two
    texts (transitively).  Word sets, not 3-shingles, so a one-word edit of a short prompt
    still counts as the same prompt."""
    word_sets = [frozenset(words(t)) for t in texts]
    pairs = [
        (a, b)
        for a in range(len(word_sets))
        for b in range(a + 1, len(word_sets))
        if jaccard(word_sets[a], word_sets[b]) >= threshold
    ]
    lo = np.array([p[0] for p in pairs], dtype=np.int64)
    hi = np.array([p[1] for p in pairs], dtype=np.int64)
    return int(np.unique(components(lo, hi, len(word_sets))).size)


# A group must hold >= 10 records at equal sizes (min_attainable: 0.5^size <= 1e-3); at
# m = 9 a side, 9 current and 1 reference record give hypergeometric p 2.1e-4, at m = 8 the
# best group gives 7e-3.  The response view is optional: without it the
# record near-duplicate test still runs (skipping it would let the data's shape switch it off).
@register(CHECK, needs=("response",), optional=("response",), min_records=9)
def near_duplicates(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    cosine_threshold: float = 0.92,
    jaccard_threshold: float = 0.5,
    min_attainable: float = 0.001,
    report_alpha: float = 0.05,
    response_cosine_threshold: float = 0.95,
    response_jaccard_threshold: float = 0.5,
    min_response_words: int = 8,
    word_jaccard_threshold: float = 0.7,
    word_cosine_threshold: float = 0.85,
) -> list[Finding]:
    """Groups of near-duplicate records or responses more common in the current batch than in the reference.

    Near-duplicates: embedding cosine >= ``cosine_threshold`` and word 3-shingle Jaccard
    >= ``jaccard_threshold``, or word-set Jaccard >= ``word_jaccard_threshold`` with
    cosine >= ``word_cosine_threshold`` (edited short records; candidates from seeded
    MinHash LSH).  When both inputs have
    responses, two records whose responses (at least ``min_response_words`` words) are
    near-duplicates (response-view cosine >= ``response_cosine_threshold``, Jaccard >=
    ``response_jaccard_threshold``) are linked too: one long answer given to many
    different prompts is how a backdoor's fixed target response looks.  Groups are
    connected components of the label-blind union graph; each is tested for a too-high
    current share (hypergeometric, Benjamini-Hochberg across groups).  A higher overall
    near-duplicate rate alone is not a finding (a topic boost raises it without any copy
    being amplified); groups with p_value <= ``report_alpha`` are returned.
    """
    n_ref, n_cur = len(ref), len(cur)
    n_total = n_ref + n_cur
    if n_ref == 0 or n_cur < 2:
        return []
    emb = np.concatenate([np.asarray(ref.embeddings), np.asarray(cur.embeddings)], axis=0)
    texts = tuple(ref.texts) + tuple(cur.texts)
    lo, hi, cos, jac = near_duplicate_edges(
        emb,
        texts,
        cosine_threshold=cosine_threshold,
        jaccard_threshold=jaccard_threshold,
        seed=seed,
        word_jaccard_threshold=word_jaccard_threshold,
        word_cosine_threshold=word_cosine_threshold,
    )
    resp = response_edges(
        ref,
        cur,
        cosine_threshold=response_cosine_threshold,
        jaccard_threshold=response_jaccard_threshold,
        min_words=min_response_words,
        seed=seed,
    )
    rlo, rhi = (resp[0], resp[1]) if resp is not None else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if lo.size == 0 and rlo.size == 0:
        return []
    is_cur = np.zeros(n_total, dtype=bool)
    is_cur[n_ref:] = True
    partnered_cur = _within_partnered(lo, hi, is_cur)
    partnered_ref = _within_partnered(lo, hi, ~is_cur)
    observed = int(partnered_cur.sum())
    ref_rate = float(partnered_ref.sum() / n_ref)
    cur_rate = observed / n_cur
    common: dict[str, object] = {
        "n_reference": n_ref,
        "n_current": n_cur,
        "cosine_threshold": cosine_threshold,
        "jaccard_threshold": jaccard_threshold,
        "reference_duplicate_rate": round(ref_rate, 5),
        "current_duplicate_rate": round(cur_rate, 5),
    }
    if resp is not None:
        common["reference_response_duplicate_rate"] = round(
            float(_within_partnered(rlo, rhi, ~is_cur).sum() / n_ref), 5
        )
        common["current_response_duplicate_rate"] = round(
            float(_within_partnered(rlo, rhi, is_cur).sum() / n_cur), 5
        )
        common["min_response_words"] = min_response_words
    findings: list[Finding] = []

    # groups: connected components of the union graph (record and long-response
    # edges), current share hypergeometric
    comp = components(np.concatenate([lo, rlo]), np.concatenate([hi, rhi]), n_total)
    record_comp = components(lo, hi, n_total) if rlo.size else comp
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
            p_adj = min(1.0, float(qv))
            if p_adj > report_alpha or s < 2:
                continue
            rows = members[members >= n_ref] - n_ref
            ref_rows = members[members < n_ref]
            mean_cos, mean_jac = _pairwise_means(
                np.asarray(cur.embeddings)[rows[:PAIRWISE_MAX]], [cur.texts[i] for i in rows[:PAIRWISE_MAX]]
            )
            expected = size * n_cur / n_total
            details: dict[str, object] = {
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
                "label-blind union graph; Benjamini-Hochberg across the groups",
                "examples": [excerpt(cur.texts[i]) for i in rows[:EXAMPLES]],
            }
            summary = (
                f"{s} current records are near-copies of one another: the group has "
                f"{size - s} reference records, so about {expected:.1f} current ones were expected"
            )
            # held together by one shared answer rather than by whole-record copies
            if resp is not None and np.unique(record_comp[members]).size > 1:
                cur_prompts = cur.batch.prompts
                prompts = [cur_prompts[i] if cur_prompts is not None else cur.texts[i] for i in rows]
                n_prompts = _distinct(prompts[:PAIRWISE_MAX])
            else:
                n_prompts = 1
            if resp is not None and n_prompts > 1:
                shared = Counter(" ".join(resp[2][i].split()) for i in members).most_common(1)[0][0]
                details.update(
                    scope="response_group",
                    shared_response=excerpt(shared),
                    distinct_prompts_current=n_prompts,
                    example_prompts=[excerpt(t) for t in prompts[:EXAMPLES]],
                )
                summary = (
                    f"{s} current records give the same answer to {n_prompts} different prompts: "
                    f"'{excerpt(shared, 80)}' ({size - s} reference records do, so about "
                    f"{expected:.1f} current ones were expected)"
                )
            findings.append(
                Finding(
                    check=CHECK,
                    summary=summary,
                    side="current",
                    record_ids=tuple(cur.ids[i] for i in rows),
                    statistic=float(s),
                    p_value=p_adj,
                    effect_size=float(s / expected),
                    details=details,
                )
            )
    findings.sort(key=lambda f: (f.p_value if f.p_value is not None else 1.0, -len(f.record_ids)))
    return findings

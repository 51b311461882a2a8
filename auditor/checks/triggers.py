"""Trigger phrases: word n-grams (1-4) that the current batch carries far more often than the
reference does, e.g. a watermark or backdoor phrase appended to 1% of the records.

Method:

1. Tokenise lowercase words; count each n-gram's document frequency (records containing it)
   in reference and current together, all in numpy (sort/unique on integer n-gram codes).
2. Decide which n-grams to test from label-blind information only, so the tests that remain
   keep their exact null distribution (independent filtering, Bourgon et al. 2010):
   - n-grams that start or end with a stopword, or are a lone stopword, are dropped (their
     inner phrase is tested instead);
   - n-grams carried by exactly the same set of records are one test, not several;
   - Tarone's (1990, Biometrics 46:515) rule drops tests whose smallest achievable p-value
     (every carrier in current) could not pass ``screen_alpha / K`` among K retained tests:
     a phrase in 6 records can never be significant among thousands, so testing it only
     dilutes the rest.  This is what lets a phrase in 20 of 2,000 records (and none of
     2,000 reference records, raw p ~ 1e-6) survive the multiple-testing correction.
3. One-sided Fisher exact test per retained test (current over-represented).  Record sets
   are split into families by the length of their longest phrase; Benjamini-Hochberg runs
   within each family and the result is multiplied by the number of families (Bonferroni
   across them).  Natural text has thousands of frequent single words but only dozens of
   frequent 3-4 word phrases, so a planted phrase competes only with its own kind.
   ``p_value`` is this adjusted value.
4. Effect filters after adjustment (ratio, count), then phrases whose current carriers are
   nearly the same records are merged and the longest phrase is reported.
5. Phrases whose carriers mostly fall in one over-selected cluster (as judged by the
   clusters check, :func:`auditor.checks.clusters.enriched_groups`) are left to that check:
   a topic that was selected brings its vocabulary with it, and one finding per cause reads
   better than forty.  The clustering is memoised, so this costs little when the clusters
   check ran first with the same seed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import chain
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from auditor.checks import register
from auditor.checks.clusters import STOPWORDS, enriched_groups
from auditor.stats import benjamini_hochberg, fisher_exact_greater
from auditor.types import Finding, Snapshot

CHECK = "triggers"

# Unicode words, lowercased, keeping an inner apostrophe ("don't").  Punctuation and
# hyphens split words, so "tango-delta" is the bigram "tango delta".
WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
MAX_N = 4
EXAMPLES = 4
EXAMPLE_CHARS = 200


@dataclass(frozen=True)
class _Grams:
    """Document frequencies of the candidate n-grams of the union (reference docs first).

    Only n-grams occurring at least ``min_count`` times and without a stopword at either
    edge have carriers and a non-zero ``df``; the others are kept as ids only.
    """

    words: list[str]  # token id -> word
    gram_tokens: list[np.ndarray]  # per n (index n-1): (G_n, n) token ids
    pair_gram: list[np.ndarray]  # per n: gram id of each (gram, doc) pair, sorted by gram
    pair_doc: list[np.ndarray]  # per n: doc index of each pair
    df: list[np.ndarray]  # per n: document frequency of each gram (0 if not a candidate)


def _tokenize(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(token ids, doc index per token, vocabulary) for lowercase words of ``texts``."""
    tok_lists = [WORD_RE.findall(t.lower()) for t in texts]
    lengths = np.fromiter(map(len, tok_lists), dtype=np.int64, count=len(tok_lists))
    flat = np.fromiter(chain.from_iterable(tok_lists), dtype=object, count=int(lengths.sum()))
    # hash-based factorisation in C: an order of magnitude faster than a Python dict loop
    codes, uniques = pd.factorize(flat)
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    return codes.astype(np.int64), doc, [str(w) for w in uniques]


def _count_ngrams(texts: Sequence[str], max_n: int, min_count: int) -> _Grams:
    tokens, doc, words = _tokenize(texts)
    v = max(1, len(words))
    is_stop = np.zeros(v, dtype=bool)
    stop_ids = [i for i, w in enumerate(words) if w in STOPWORDS]
    is_stop[stop_ids] = True
    n_docs = max(1, len(texts))
    min_count = max(1, int(min_count))

    gram_tokens, pair_gram, pair_doc, dfs = [], [], [], []
    code = tokens.copy()
    table = np.arange(v, dtype=np.int64)[:, None]  # gram id -> its token ids
    for n in range(1, max_n + 1):
        if n > 1:
            # An n-gram occurs at most as often as its (n-1)-gram prefix and suffix, so only
            # positions where both are frequent can start a frequent n-gram (apriori
            # pruning): this keeps the 3- and 4-gram passes small.
            size = tokens.size - (n - 1)
            if size <= 0:
                break
            ok = (code[:size] >= 0) & (code[1 : size + 1] >= 0) & (doc[:size] == doc[n - 1 : n - 1 + size])
            raw = code[:size][ok] * v + tokens[n - 1 : n - 1 + size][ok]
            if raw.size == 0:
                break
            uniq, inv = np.unique(raw, return_inverse=True)
            code = np.full(size, -1, dtype=np.int64)
            code[ok] = inv.reshape(-1)
            # token ids of each new gram: its prefix's tokens plus the last token
            table = np.concatenate([table[uniq // v], (uniq % v)[:, None]], axis=1)
        occ = np.bincount(code[code >= 0], minlength=table.shape[0])
        frequent = occ >= min_count
        # positions of infrequent grams cannot extend to frequent longer grams
        code = np.where((code >= 0) & frequent[np.maximum(code, 0)], code, -1)
        # label-blind filter: a phrase with a stopword at either edge is a padded version
        # of its inner phrase; test the inner phrase instead
        cand = frequent & ~is_stop[table[:, 0]] & ~is_stop[table[:, -1]]
        pos = np.nonzero(code >= 0)[0]
        pos = pos[cand[code[pos]]]
        pairs = np.unique(code[pos] * n_docs + doc[pos])
        pg, pdoc = pairs // n_docs, pairs % n_docs
        gram_tokens.append(table)
        pair_gram.append(pg)
        pair_doc.append(pdoc)
        dfs.append(np.bincount(pg, minlength=table.shape[0]))
    return _Grams(words=words, gram_tokens=gram_tokens, pair_gram=pair_gram, pair_doc=pair_doc, df=dfs)


def _log_min_p(t: np.ndarray, n_total: int, n_cur: int) -> np.ndarray:
    """log of the smallest one-sided Fisher p a record set of size ``t`` can reach:
    every carrier (up to n_cur) in current.  Depends on margins only (label-blind)."""
    a_max = np.minimum(t, n_cur)
    return _st.hypergeom.logpmf(a_max, n_total, n_cur, t)


def _tarone_threshold(log_min_p: np.ndarray, alpha: float) -> float:
    """Tarone's K: the smallest K with #{tests whose min p <= alpha/K} <= K; returns
    log(alpha/K), the min-p cut-off defining the retained tests."""
    m = log_min_p.size
    if m == 0:
        return math.log(alpha)
    s = np.sort(log_min_p)
    for k in range(1, m + 1):
        cut = math.log(alpha / k)
        if int(np.searchsorted(s, cut, side="right")) <= k:
            return cut
    return math.log(alpha / m)


def _snippet(text: str, phrase_tokens: Sequence[str], n: int = EXAMPLE_CHARS) -> str:
    """A window of ``text`` around the first occurrence of the phrase."""
    flat = " ".join(text.split())
    pattern = r"(?<![^\W_])" + r"[\W_]+".join(re.escape(w) for w in phrase_tokens) + r"(?![^\W_])"
    m = re.search(pattern, flat, flags=re.IGNORECASE)
    if m is None or len(flat) <= n:
        return flat if len(flat) <= n else flat[: n - 1] + "…"
    start = max(0, min(m.start() - (n - (m.end() - m.start())) // 2, len(flat) - n))
    out = flat[start : start + n]
    return ("…" if start > 0 else "") + out + ("…" if start + n < len(flat) else "")


@register(CHECK)
def trigger_phrases(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    alpha: float = 0.05,
    screen_alpha: float = 0.01,
    min_count: int = 5,
    min_ratio: float = 4.0,
    max_n: int = MAX_N,
    merge_jaccard: float = 0.8,
    skip_cluster_explained: bool = True,
    cluster_explained_share: float = 0.8,
) -> list[Finding]:
    """Word n-grams (1-4) carried by many more current records than the reference explains.

    Document frequencies per input; label-blind screening (stopword edges, identical record
    sets, Tarone's minimum-attainable-p rule at ``screen_alpha``); one-sided Fisher exact
    test per phrase; Benjamini-Hochberg within each phrase length, Bonferroni across lengths
    (``p_value`` adjusted, ``details.p_raw`` raw).  Reported when adjusted p <= ``alpha``, at least ``min_count``
    current records carry it and its share ratio is >= ``min_ratio``.  Nested phrases
    carried by nearly the same records (Jaccard >= ``merge_jaccard``) are reported once, as
    the longest.  Phrases >= ``cluster_explained_share`` inside one over-selected cluster are
    left to the clusters check when ``skip_cluster_explained``.
    """
    n_ref, n_cur = len(ref), len(cur)
    if n_ref == 0 or n_cur == 0:
        return []
    n_total = n_ref + n_cur
    texts = tuple(ref.texts) + tuple(cur.texts)
    grams = _count_ngrams(texts, max(1, int(max_n)), min_count)

    # Candidate record sets: every kept n-gram carried by >= min_count records in total
    # (a margin, so label-blind), grouped by identical carrier sets.
    rng = np.random.default_rng(seed)
    doc_key = rng.integers(1, np.iinfo(np.int64).max, size=n_total, dtype=np.int64).view(np.uint64)
    cand_n, cand_gram, cand_hash, cand_df = [], [], [], []
    for n_idx, df in enumerate(grams.df):
        gids = np.nonzero(df >= max(1, min_count))[0]
        if gids.size == 0:
            continue
        pg, pdoc = grams.pair_gram[n_idx], grams.pair_doc[n_idx]
        # order-free 64-bit fingerprint of each gram's carrier set: the sum (mod 2^64) of
        # random per-record keys; pairs are sorted by gram, so one reduceat over the grams
        # that have carriers gives every sum
        present = np.nonzero(df > 0)[0]
        sums = np.zeros(df.size, dtype=np.uint64)
        sums[present] = np.add.reduceat(doc_key[pdoc], np.searchsorted(pg, present))
        h = sums[gids]
        cand_n.append(np.full(gids.size, n_idx + 1))
        cand_gram.append(gids)
        cand_hash.append(np.asarray(h, dtype=np.uint64))
        cand_df.append(df[gids])
    if not cand_n:
        return []
    c_n = np.concatenate(cand_n)
    c_gram = np.concatenate(cand_gram)
    c_hash = np.concatenate(cand_hash)
    c_df = np.concatenate(cand_df)
    set_of, n_sets = _group_sets(c_df, c_hash)
    # Representative of each record set: its longest phrase (most tokens); the set belongs
    # to that phrase length's family.
    order = np.lexsort((-c_n, set_of))
    first = np.ones(order.size, dtype=bool)
    first[1:] = set_of[order][1:] != set_of[order][:-1]
    rep = order[first]  # candidate index per set, sets in increasing id
    set_df = c_df[rep]
    set_family = c_n[rep]
    log_minp = _log_min_p(set_df, n_total, n_cur)

    # The alpha budget is split equally across phrase lengths (Bonferroni over families,
    # BH within): natural text has thousands of frequent single words but few frequent
    # 3-4 word phrases, so a planted phrase competes only with its own kind.
    families = [int(f) for f in np.unique(set_family)]
    n_fam = max(1, len(families))
    tested_parts, cuts = [], {}
    for f in families:
        in_f = np.nonzero(set_family == f)[0]
        cuts[f] = _tarone_threshold(log_minp[in_f], screen_alpha / n_fam)
        tested_parts.append(in_f[log_minp[in_f] <= cuts[f]])
    tested = np.concatenate(tested_parts) if tested_parts else np.zeros(0, dtype=np.int64)
    if tested.size == 0:
        return []

    def carriers(ci: int) -> np.ndarray:
        n_idx = int(c_n[ci]) - 1
        pg = grams.pair_gram[n_idx]
        lo, hi = np.searchsorted(pg, [c_gram[ci], c_gram[ci] + 1])
        return grams.pair_doc[n_idx][lo:hi]

    p_raw = np.ones(tested.size)
    counts = np.zeros((tested.size, 2), dtype=np.int64)
    for j, s in enumerate(tested):
        docs = carriers(int(rep[s]))
        a = int(np.count_nonzero(docs >= n_ref))
        b = int(docs.size - a)
        counts[j] = (a, b)
        # a phrase no more common in current than in reference gets p = 1: conservative,
        # and it spares computing a p-value that could never be reported
        if a * n_ref > b * n_cur:
            p_raw[j] = fisher_exact_greater(a, b, n_cur - a, n_ref - b)
    p_adj = np.ones(tested.size)
    fam_of_test = set_family[tested]
    for f in families:
        m = fam_of_test == f
        if m.any():
            p_adj[m] = np.minimum(1.0, n_fam * benjamini_hochberg(p_raw[m]))

    hits = []
    for j, s in enumerate(tested):
        a, b = (int(x) for x in counts[j])
        ratio = ((a + 0.5) / (n_cur + 0.5)) / ((b + 0.5) / (n_ref + 0.5))
        if p_adj[j] <= alpha and a >= min_count and ratio >= min_ratio:
            ci = int(rep[s])
            docs = carriers(ci)
            hits.append((float(p_adj[j]), float(p_raw[j]), ci, a, b, ratio, docs[docs >= n_ref] - n_ref))
    if not hits:
        return []

    # Merge phrases carried by nearly the same current records; report the longest.
    hits.sort(key=lambda h: (h[1], -int(c_n[h[2]])))
    groups: list[list] = []
    for h in hits:
        hs = set(h[6].tolist())
        for grp in groups:
            gs = grp[0]
            if len(hs & gs) / max(1, len(hs | gs)) >= merge_jaccard:
                grp[1].append(h)
                break
        else:
            groups.append([hs, [h]])

    explained: list[np.ndarray] = []
    if skip_cluster_explained:
        explained = enriched_groups(ref, cur, seed=seed)

    def phrase(ci: int) -> str:
        return " ".join(grams.words[t] for t in grams.gram_tokens[int(c_n[ci]) - 1][c_gram[ci]])

    findings = []
    for _, members in groups:
        best = max(members, key=lambda h: (int(c_n[h[2]]), -h[1]))
        qv, pv, ci, a, b, ratio, rows = best
        if any(np.isin(rows, g).mean() >= cluster_explained_share for g in explained):
            continue
        text = phrase(ci)
        toks = text.split()
        expected = b * n_cur / n_ref
        details = {
            "phrase": text,
            "n_tokens": len(toks),
            "n_current": a,
            "n_reference": b,
            "expected_current_from_reference_share": round(expected, 2),
            "share_current": a / n_cur,
            "share_reference": b / n_ref,
            "share_ratio": ratio,
            "p_raw": pv,
            "family": int(c_n[ci]),
            "n_tests": int(tested.size),
            "n_tests_in_family": int(np.count_nonzero(fam_of_test == c_n[ci])),
            "n_families": n_fam,
            "n_candidate_record_sets": int(n_sets),
            "min_attainable_p_cutoff": math.exp(cuts[int(c_n[ci])]),
            "also_phrases": sorted({phrase(h[2]) for h in members} - {text}),
            "method": "document frequency of word n-grams; one-sided Fisher exact; label-blind "
            "screening (stopword edges, identical record sets, Tarone); Benjamini-Hochberg",
            "examples": [_snippet(cur.texts[i], toks) for i in rows[:EXAMPLES]],
        }
        findings.append(
            Finding(
                check=CHECK,
                summary=(
                    f"phrase '{text}' in {a} current vs {b} reference records "
                    f"({expected:.1f} expected from the reference share, {ratio:.1f}x)"
                ),
                side="current",
                record_ids=tuple(cur.ids[i] for i in rows),
                statistic=float(a),
                p_value=qv,
                effect_size=float(math.log2(ratio)),
                details=details,
            )
        )
    findings.sort(key=lambda f: (f.p_value, -(f.statistic or 0.0)))
    return findings


def _group_sets(df: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, int]:
    """Group candidates with the same carrier set (same size and fingerprint).

    Returns ``(set_of, n_sets)``: ``set_of[i]`` is candidate i's group, 0..n_sets-1.
    """
    key = np.stack([df.astype(np.uint64), h.astype(np.uint64)], axis=1)
    keys, inverse = np.unique(key, axis=0, return_inverse=True)
    return inverse.reshape(-1), int(keys.shape[0])

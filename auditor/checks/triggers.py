"""Trigger phrases: word n-grams (1-4) that the current batch carries far more often than the
reference does, e.g. a watermark or backdoor phrase appended to 1% of the records.

Method:

1. Tokenise lowercase words; count each n-gram's document frequency (records containing it)
   in reference and current together, all in numpy (sort/unique on integer n-gram codes).
2. Decide which n-grams to test from label-blind information only, so the tests that remain
   keep their exact null distribution (independent filtering, Bourgon et al. 2010):
   - n-grams that start or end with a stopword or a number / list marker / single
     character (:func:`auditor.terms.is_content_word`), or consist of one, are dropped
     (their inner phrase is tested instead): list numbering is not a trigger;
   - prompt templates' fixed text is removed first (:func:`auditor.terms.strip_template`:
     lines recurring like a template's and words shared by >= 90% of a group of records
     with the same first or last words), so no phrase is template text or spans it;
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
   When both inputs carry prompt and response views, one more family holds the record
   sets whose carriers' answers mostly do not fit their prompts (:func:`misfit_flags`:
   a record's prompt-response cosine far below that of its prompt neighbours in the
   union, label-blind).  A backdoor flips or replaces its carriers' answers, so its
   phrase lands in this small family, where it competes with tens of tests, not
   thousands; every other phrase keeps its length family (the Bonferroni factor grows
   from the number of lengths to that plus one).  A set may be in two families; its
   p-value is the smaller adjusted one (the union bound covers both).
4. Effect filters after adjustment (ratio, count), then phrases whose current carriers are
   nearly the same records are merged and the longest phrase is reported.
5. Phrases whose carriers mostly (``cluster_explained_share``) fall inside the clusters the
   clusters check flags as over-selected (:func:`auditor.enrichment.enriched_groups`)
   are left to that check: a topic that was selected brings its vocabulary with it, and
   one finding per cause reads better than forty.  The union of flagged clusters is used,
   not one cluster, because a selected topic often spans a few neighbouring clusters.  A
   phrase planted at random lands in over-selected clusters only in proportion to their
   size, so it is not dropped.  The clustering is memoised, so this costs little when the clusters
   check ran first with the same seed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd
from scipy import stats as _st

from auditor.checks import register
from auditor.engine import distributed_ngrams
from auditor.enrichment import enriched_groups
from auditor.stats import benjamini_hochberg, fisher_exact_greater, share_ratio
from auditor.terms import is_content_word, phrase_words, strip_template
from auditor.types import Finding, Snapshot

CHECK = "triggers"

MAX_N = 4
# the misfit flags' neighbour search runs against at most this many union records
MISFIT_MAX_BASE = 10_000
EXAMPLES = 4
EXAMPLE_CHARS = 200


@dataclass(frozen=True)
class NGramCounts:
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
    # words are maximal runs of letters and digits: "tango-delta" is the bigram "tango delta".
    # Tokenised in chunks: one Python string per word of the whole union cost ~1.3 GB per
    # 200,000 records; ids are numbered in order of first appearance, as one pass would.
    vocab: dict[str, int] = {}
    codes: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        tok_lists = [phrase_words(t) for t in texts[start : start + _TOKENIZE_CHUNK]]
        n_tok = np.fromiter(map(len, tok_lists), dtype=np.int64, count=len(tok_lists))
        flat = np.fromiter(chain.from_iterable(tok_lists), dtype=object, count=int(n_tok.sum()))
        # hash-based factorisation in C: an order of magnitude faster than a Python dict loop
        local, uniques = pd.factorize(flat)
        to_global = np.fromiter(
            (vocab.setdefault(str(w), len(vocab)) for w in uniques), dtype=np.int64, count=len(uniques)
        )
        codes.append(to_global[local] if local.size else np.zeros(0, dtype=np.int64))
        lengths.append(n_tok)
    n_per_doc = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), n_per_doc)
    tokens = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
    return tokens, doc, list(vocab)


_TOKENIZE_CHUNK = 20_000


def count_ngrams(texts: Sequence[str], max_n: int, min_count: int) -> NGramCounts:
    """Document frequency of every word n-gram (n <= ``max_n``) seen >= ``min_count`` times,
    with phrases that start or end with a stopword or a number left out as candidates."""
    tokens, doc, words = _tokenize(texts)
    v = max(1, len(words))
    is_stop = np.zeros(v, dtype=bool)
    # numbers, list markers and single characters are edge words like stopwords, so a
    # phrase made only of them is never a candidate ("7", "step 7" is tested as "step")
    stop_ids = [i for i, w in enumerate(words) if not is_content_word(w)]
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
        # sort + mask, not np.unique: numpy 2.4's hash-based unique is ~50x slower on these
        pairs = np.sort(code[pos] * n_docs + doc[pos])
        pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))] if pairs.size else pairs
        pg, pdoc = pairs // n_docs, pairs % n_docs
        gram_tokens.append(table)
        pair_gram.append(pg)
        pair_doc.append(pdoc)
        dfs.append(np.bincount(pg, minlength=table.shape[0]))
    return NGramCounts(words=words, gram_tokens=gram_tokens, pair_gram=pair_gram, pair_doc=pair_doc, df=dfs)


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
    ks = np.arange(1, m + 1)
    cuts = np.log(alpha / ks)
    ok = np.searchsorted(np.sort(log_min_p), cuts, side="right") <= ks
    # always true at K = m, so argmax finds the first K that qualifies
    return float(cuts[int(np.argmax(ok))])


@dataclass(frozen=True)
class _Candidates:
    """Candidate n-grams grouped into record sets (one test per distinct set)."""

    n: np.ndarray  # per candidate: phrase length
    gram: np.ndarray  # per candidate: gram id within its length
    rep: np.ndarray  # per set: the candidate that names it (its longest phrase)
    df: np.ndarray  # per set: number of carrier records
    n_sets: int


def _candidate_sets(grams: NGramCounts, n_docs: int, min_count: int, seed: int) -> _Candidates | None:
    """Every candidate n-gram carried by >= ``min_count`` records in total (a margin, so
    label-blind), grouped by identical carrier sets."""
    rng = np.random.default_rng(seed)
    doc_key = rng.integers(1, np.iinfo(np.int64).max, size=n_docs, dtype=np.int64).view(np.uint64)
    c_n, c_gram, c_hash, c_df = [], [], [], []
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
        c_n.append(np.full(gids.size, n_idx + 1))
        c_gram.append(gids)
        c_hash.append(sums[gids])
        c_df.append(df[gids])
    if not c_n:
        return None
    n, gram, h, df = (np.concatenate(x) for x in (c_n, c_gram, c_hash, c_df))
    keys, set_of = np.unique(np.stack([df.astype(np.uint64), h], axis=1), axis=0, return_inverse=True)
    set_of = set_of.reshape(-1)
    # the set is named by its longest phrase: sort by set, then longest first
    order = np.lexsort((-n, set_of))
    first = np.ones(order.size, dtype=bool)
    first[1:] = set_of[order][1:] != set_of[order][:-1]
    rep = order[first]
    return _Candidates(n=n, gram=gram, rep=rep, df=df[rep], n_sets=int(keys.shape[0]))


def misfit_flags(
    prompts: np.ndarray,
    responses: np.ndarray,
    *,
    k: int = 10,
    quantile: float = 0.05,
    max_base: int = MISFIT_MAX_BASE,
    seed: int = 0,
) -> np.ndarray:
    """Records whose answer fits its prompt far worse than similar prompts' answers fit theirs.

    ``prompts``/``responses``: unit-norm embeddings of the union's prompt and response
    views.  A record's agreement is its prompt-response cosine; its expectation, the
    median agreement of its ``k`` nearest prompts (cosine, itself excluded) among a seeded
    sample of at most ``max_base`` union records (all of them below that; the sample
    keeps the search linear in the input); flagged: agreement minus expectation in the
    union's lowest ``quantile``.  The neighbours matter: a one-word label answer fits any
    prompt poorly, so raw agreement would flag whole task types; relative to prompts of
    the same task, a flipped or replaced answer stands out.  Uses the union only (no side
    labels), so selecting tests by it keeps their null distribution (independent filtering).
    """
    from auditor.neighbours import candidate_knn, search_plan

    n = len(prompts)
    if n < 3:
        return np.zeros(n, dtype=bool)
    p = np.ascontiguousarray(prompts, dtype=np.float32)
    agree = np.einsum("ij,ij->i", p, np.asarray(responses, dtype=np.float32))
    base_rows = np.arange(n)
    if n > max_base:
        base_rows = np.sort(np.random.default_rng(seed).choice(n, size=max_base, replace=False))
    k = max(1, min(int(k), base_rows.size - 1))
    plan = search_plan(base_rows.size, n, p.shape[1])
    _, nn = candidate_knn(p[base_rows], p, k + 1, proj_dim=plan, seed=seed)
    nn = base_rows[nn]
    # drop each record itself from its neighbours (else the last extra one)
    is_self = nn == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones(nn.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    expected = np.median(agree[nn[keep].reshape(n, k)], axis=1)
    resid = agree - expected
    return resid <= np.quantile(resid, quantile)


def _set_flag_counts(grams: NGramCounts, cands: _Candidates, flags: np.ndarray) -> np.ndarray:
    """Per candidate record set: how many of its carriers are flagged."""
    out = np.zeros(cands.rep.size, dtype=np.int64)
    per_n = [
        np.bincount(pg, weights=flags[pd].astype(np.float64), minlength=df.size).astype(np.int64)
        for pg, pd, df in zip(grams.pair_gram, grams.pair_doc, grams.df, strict=True)
    ]
    for s_idx, ci in enumerate(cands.rep):
        out[s_idx] = per_n[int(cands.n[ci]) - 1][int(cands.gram[ci])]
    return out


# the family id of the misfit family (length families are 1..max_n)
MISFIT_FAMILY = 0


def _set_of_cand(cands: _Candidates, ci: int) -> int:
    return int(np.nonzero(cands.rep == ci)[0][0])


@dataclass(frozen=True)
class _Hit:
    p_adj: float
    p_raw: float
    cand: int  # candidate index naming the phrase
    n_tokens: int
    a: int  # current carriers
    b: int  # reference carriers
    ratio: float
    rows: np.ndarray  # current row indices of the carriers
    family: int  # the family whose adjusted p-value this is (MISFIT_FAMILY or the length)


def _snippet(text: str, phrase_tokens: Sequence[str], n: int = EXAMPLE_CHARS) -> str:
    """A window of ``text`` around the first occurrence of the phrase."""
    flat = " ".join(text.split())
    pattern = r"(?<![^\W_])" + r"[\W_]+".join(re.escape(w) for w in phrase_tokens) + r"(?![^\W_])"
    m = re.search(pattern, flat, flags=re.IGNORECASE)
    if m is None or len(flat) <= n:
        return flat if len(flat) <= n else flat[: n - 1] + "…"
    width = n - 2  # room for an ellipsis at either end
    start = max(0, min(m.start() - (width - (m.end() - m.start())) // 2, len(flat) - width))
    out = flat[start : start + width]
    return ("…" if start > 0 else "") + out + ("…" if start + width < len(flat) else "")


# A phrase carried by every current record and no reference record has the smallest Fisher
# p, 1/C(2m, m): 1.1e-3 at m = 6 records a side, 2.9e-4 at m = 7 (min_count = 5 carriers).
# The prompt/response views feed only the misfit family: used when present, never required.
@register(CHECK, min_records=7, needs=("prompt", "response"), optional=("prompt", "response"))
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
    max_findings: int = 50,
    skip_cluster_explained: bool = True,
    cluster_explained_share: float = 0.8,
    skip_template_words: bool = True,
    misfit_family: bool = True,
    misfit_quantile: float = 0.05,
    misfit_share: float = 0.5,
) -> list[Finding]:
    """Word n-grams (1-4) carried by many more current records than the reference explains.

    Document frequencies per input; label-blind screening (stopword edges, identical record
    sets, Tarone's minimum-attainable-p rule at ``screen_alpha``); one-sided Fisher exact
    test per phrase; Benjamini-Hochberg within each phrase length, Bonferroni across lengths
    (``p_value`` adjusted, ``details.p_raw`` raw).  Reported when adjusted p <= ``alpha``,
    at least ``min_count`` current records carry it and its share ratio is >= ``min_ratio``.
    Phrases carried by nearly the same records (Jaccard >= ``merge_jaccard``) are reported
    once, as the longest; at most ``max_findings``.  Phrases whose carriers lie
    >= ``cluster_explained_share`` inside the over-selected clusters are left to the
    clusters check when ``skip_cluster_explained``.  Numbers, list markers and single
    characters never make a phrase on their own; with ``skip_template_words``, phrases
    that are mostly the fixed text of a prompt template (label-blind template groups of
    the union) are not tested.  With ``misfit_family`` and prompt/response views on both
    sides, record sets with at least ``misfit_share`` of their carriers flagged by
    :func:`misfit_flags` (lowest ``misfit_quantile``) also form a family of their own.
    """
    n_ref, n_cur = len(ref), len(cur)
    if n_ref == 0 or n_cur == 0:
        return []
    n_total = n_ref + n_cur
    union = tuple(ref.texts) + tuple(cur.texts)
    prompts = (
        tuple(ref.batch.prompts) + tuple(cur.batch.prompts)
        if ref.batch.prompts is not None and cur.batch.prompts is not None
        else None
    )
    # A prompt template's fixed text says which templates were picked, not what was
    # planted, and phrases spanning it ("news article business") mix the two: phrases are
    # read from the records with their template's text removed (label-blind groups).
    words = strip_template(union, prompts, n_ref) if skip_template_words else union
    # --- engine hook (auditor.engine): on the Ray engine the counts are a distributed pass ---
    res = distributed_ngrams(words, max_n=max(1, int(max_n)), min_count=min_count)
    grams = NGramCounts(*res) if res is not None else count_ngrams(words, max(1, int(max_n)), min_count)
    # --- end engine hook ---
    cands = _candidate_sets(grams, n_total, min_count, seed)
    if cands is None:
        return []
    set_family = cands.n[cands.rep]
    log_minp = _log_min_p(cands.df, n_total, n_cur)
    members_of: dict[int, np.ndarray] = {
        int(f): np.nonzero(set_family == f)[0] for f in np.unique(set_family)
    }
    flag_share = np.zeros(cands.rep.size)
    views = ("prompt", "response")
    if misfit_family and all(v in ref.views and v in cur.views for v in views):
        flags = misfit_flags(
            np.concatenate([ref.views["prompt"], cur.views["prompt"]]),
            np.concatenate([ref.views["response"], cur.views["response"]]),
            quantile=misfit_quantile,
            seed=seed,
        )
        flag_share = _set_flag_counts(grams, cands, flags) / np.maximum(cands.df, 1)
        members_of[MISFIT_FAMILY] = np.nonzero(flag_share >= misfit_share)[0]

    # The alpha budget is split equally across families (Bonferroni over families, BH
    # within): natural text has thousands of frequent single words but few frequent 3-4
    # word phrases, so a planted phrase competes only with its own kind.
    families = sorted(members_of)
    n_fam = len(families)
    cuts = {}
    tested_parts, fam_parts = [], []
    for f in families:
        in_f = members_of[f]
        cuts[f] = _tarone_threshold(log_minp[in_f], screen_alpha / n_fam)
        kept = in_f[log_minp[in_f] <= cuts[f]]
        tested_parts.append(kept)
        fam_parts.append(np.full(kept.size, f))
    tested = np.concatenate(tested_parts)
    fam_of_test = np.concatenate(fam_parts)
    if tested.size == 0:
        return []

    def carriers(ci: int) -> np.ndarray:
        n_idx = int(cands.n[ci]) - 1
        pg = grams.pair_gram[n_idx]
        lo, hi = np.searchsorted(pg, [cands.gram[ci], cands.gram[ci] + 1])
        return grams.pair_doc[n_idx][lo:hi]

    p_raw = np.ones(tested.size)
    counts = np.zeros((tested.size, 2), dtype=np.int64)
    big = np.zeros(tested.size, dtype=bool)
    for j, s in enumerate(tested):
        docs = carriers(int(cands.rep[s]))
        a = int(np.count_nonzero(docs >= n_ref))
        b = int(docs.size - a)
        counts[j] = (a, b)
        # A phrase that fails the effect filters is never reported, so it keeps p = 1
        # instead of its exact p: BH is monotone in every p-value, so this can only make
        # the others' adjusted p larger (conservative), and it spares most exact tests.
        big[j] = a >= min_count and share_ratio(a, b, n_cur, n_ref) >= min_ratio
        if big[j]:
            p_raw[j] = fisher_exact_greater(a, b, n_cur - a, n_ref - b)
    p_adj = np.ones(tested.size)
    for f in families:
        m = fam_of_test == f
        p_adj[m] = np.minimum(1.0, n_fam * benjamini_hochberg(p_raw[m]))

    # a set tested in two families (its length's and the misfit one) counts once, with
    # the smaller adjusted p-value
    best_test: dict[int, int] = {}
    for j_sig in np.nonzero(big & (p_adj <= alpha))[0].tolist():
        s_idx = int(tested[j_sig])
        if s_idx not in best_test or p_adj[j_sig] < p_adj[best_test[s_idx]]:
            best_test[s_idx] = j_sig
    hits = []
    for jj in sorted(best_test.values()):
        ci = int(cands.rep[tested[jj]])
        docs = carriers(ci)
        n_a, n_b = int(counts[jj, 0]), int(counts[jj, 1])
        hits.append(
            _Hit(
                p_adj=float(p_adj[jj]),
                p_raw=float(p_raw[jj]),
                cand=ci,
                n_tokens=int(cands.n[ci]),
                a=n_a,
                b=n_b,
                ratio=share_ratio(n_a, n_b, n_cur, n_ref),
                rows=docs[docs >= n_ref] - n_ref,
                family=int(fam_of_test[jj]),
            )
        )
    if not hits:
        return []

    # Phrases carried by nearly the same current records are one finding, named by the
    # longest phrase among them; most significant first, at most max_findings groups.
    hits.sort(key=lambda h: (h.p_raw, -h.n_tokens))
    groups: list[tuple[set[int], list[_Hit]]] = []
    for h in hits:
        hs = set(h.rows.tolist())
        for gs, members in groups:
            if len(hs & gs) >= merge_jaccard * len(hs | gs):
                members.append(h)
                break
        else:
            if len(groups) < max_findings:
                groups.append((hs, [h]))

    selected = enriched_groups(ref, cur, seed=seed) if skip_cluster_explained else []
    explained = np.concatenate(selected) if selected else np.zeros(0, dtype=np.int64)

    def phrase(ci: int) -> str:
        n_idx = int(cands.n[ci]) - 1
        return " ".join(grams.words[t] for t in grams.gram_tokens[n_idx][cands.gram[ci]])

    findings = []
    for _, members in groups:
        best = max(members, key=lambda h: (h.n_tokens, -h.p_raw))
        if explained.size and np.isin(best.rows, explained).mean() >= cluster_explained_share:
            continue
        text = phrase(best.cand)
        toks = text.split()
        expected = best.b * n_cur / n_ref
        details = {
            "phrase": text,
            "n_tokens": len(toks),
            "n_current": best.a,
            "n_reference": best.b,
            "expected_current_from_reference_share": round(expected, 2),
            "share_current": best.a / n_cur,
            "share_reference": best.b / n_ref,
            "share_ratio": best.ratio,
            "p_raw": best.p_raw,
            "family": "misfit" if best.family == MISFIT_FAMILY else best.family,
            "n_tests": int(tested.size),
            "n_tests_in_family": int(np.count_nonzero(fam_of_test == best.family)),
            "n_families": n_fam,
            "misfit_share": float(flag_share[_set_of_cand(cands, best.cand)]),
            "n_candidate_record_sets": cands.n_sets,
            "min_attainable_p_cutoff": math.exp(cuts[best.family]),
            "also_phrases": sorted({phrase(h.cand) for h in members} - {text}),
            "method": "document frequency of word n-grams; one-sided Fisher exact; label-blind "
            "screening (stopword edges, identical record sets, Tarone); Benjamini-Hochberg "
            "within each family (phrase length; carriers whose answers do not fit their "
            "prompts), Bonferroni across families",
            "examples": [_snippet(cur.texts[i], toks) for i in best.rows[:EXAMPLES]],
        }
        findings.append(
            Finding(
                check=CHECK,
                summary=(
                    f"phrase '{text}' in {best.a} current records where the reference's share "
                    f"({best.b} of {n_ref}) predicts {expected:.1f} ({best.ratio:.1f}x)"
                ),
                side="current",
                record_ids=tuple(cur.ids[i] for i in best.rows),
                statistic=float(best.a),
                p_value=best.p_adj,
                effect_size=float(math.log2(best.ratio)),
                details=details,
            )
        )
    findings.sort(key=lambda f: (f.p_value, -(f.statistic or 0.0)))
    return findings

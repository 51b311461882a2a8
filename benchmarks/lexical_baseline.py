"""A deliberately simple lexical baseline for the planted-attack suite (no model).

Clearly a baseline, not part of auditor: it exists so the planted suite can show where the
embedding-based gate is ahead of what word counts alone find.  Three families, each
Benjamini-Hochberg-adjusted within itself; the gate fails when any family's smallest
adjusted p is below ``alpha / 3`` (Bonferroni across the families):

1. TF-IDF clusters: k-means (k = sqrt(n/2)) on TF-IDF vectors of the union, one two-sided
   binomial test per cluster of its current count against the union's current share;
   an enriched cluster names its current records, a depleted one its reference records.
2. n-gram enrichment and depletion: word 1-2-grams in at least 5 records, one-sided Fisher
   exact tests of the records carrying each (current vs reference) in both directions;
   a finding names the carrying records of the side it points at.
3. TF-IDF near-duplicate groups: connected components of current records at TF-IDF cosine
   >= 0.8, size >= 5, each tested (Fisher) against how many reference records fall that
   close to the group.

Used by ``benchmarks/planted.py --baseline``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from auditor.stats import benjamini_hochberg, fisher_exact_greater, fisher_exact_less
from auditor.types import Finding

ALPHA = 0.01
FAMILIES = 3


def _findings_from(rows: list[tuple[float, str, str, tuple[str, ...]]], check: str) -> list[Finding]:
    if not rows:
        return []
    q = benjamini_hochberg([r[0] for r in rows])
    out = []
    for (_, summary, side, ids), p in zip(rows, q, strict=True):
        sev = "fail" if p < ALPHA / FAMILIES else "info"
        out.append(Finding(check=check, summary=summary, side=side, record_ids=ids, p_value=float(p), severity=sev))  # type: ignore[arg-type]
    return out


def tfidf_clusters(x, n_ref: int, ids: Sequence[str], seed: int) -> list[Finding]:  # type: ignore[no-untyped-def]
    from scipy.stats import binomtest
    from sklearn.cluster import MiniBatchKMeans

    n = x.shape[0]
    k = max(2, round(math.sqrt(n / 2)))
    assign = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=1024).fit_predict(x)
    share = (n - n_ref) / n
    rows = []
    for c in range(k):
        m = np.flatnonzero(assign == c)
        if m.size < 5:
            continue
        a = int((m >= n_ref).sum())
        p = binomtest(a, m.size, share).pvalue
        if a / m.size > share:
            rows.append((p, f"tf-idf cluster {c} enriched", "current", tuple(ids[i] for i in m if i >= n_ref)))
        else:
            rows.append((p, f"tf-idf cluster {c} depleted", "reference", tuple(ids[i] for i in m if i < n_ref)))
    return _findings_from(rows, "lexical_clusters")


def ngrams(x_bin, vocab: Sequence[str], n_ref: int, ids: Sequence[str]) -> list[Finding]:  # type: ignore[no-untyped-def]
    n = x_bin.shape[0]
    n_cur = n - n_ref
    csc = x_bin.tocsc()
    df_ref = np.asarray(csc[:n_ref].sum(axis=0)).ravel()
    df_cur = np.asarray(csc[n_ref:].sum(axis=0)).ravel()
    rows = []
    for j in np.flatnonzero(df_ref + df_cur >= 5):
        a, b = int(df_cur[j]), int(df_ref[j])
        docs = csc.indices[csc.indptr[j] : csc.indptr[j + 1]]
        if a * n_ref > b * n_cur:
            p = fisher_exact_greater(a, b, n_cur - a, n_ref - b)
            rows.append((p, f"'{vocab[j]}' enriched", "current", tuple(ids[i] for i in docs if i >= n_ref)))
        else:
            p = fisher_exact_less(a, b, n_cur - a, n_ref - b)
            rows.append((p, f"'{vocab[j]}' depleted", "reference", tuple(ids[i] for i in docs if i < n_ref)))
    return _findings_from(rows, "lexical_ngrams")


def near_duplicate_groups(x, n_ref: int, ids: Sequence[str], threshold: float = 0.8) -> list[Finding]:  # type: ignore[no-untyped-def]
    from scipy.sparse.csgraph import connected_components

    n = x.shape[0]
    n_cur = n - n_ref
    cur = x[n_ref:]
    sim = (cur @ cur.T).tocsr()
    sim.data = (sim.data >= threshold).astype(np.int8)
    sim.eliminate_zeros()
    _, lab = connected_components(sim, directed=False)
    rows = []
    for g in np.unique(lab):
        m = np.flatnonzero(lab == g)
        if m.size < 5:
            continue
        near_ref = int(((x[:n_ref] @ cur[m].T).max(axis=1).toarray().ravel() >= threshold).sum())
        p = fisher_exact_greater(m.size, near_ref, n_cur - m.size, n_ref - near_ref)
        rows.append((p, f"{m.size} near-duplicate current records", "current", tuple(ids[n_ref + i] for i in m)))
    return _findings_from(rows, "lexical_duplicates")


def run_baseline(ref_texts: Sequence[str], cur_texts: Sequence[str], ref_ids: Sequence[str],
                 cur_ids: Sequence[str], *, seed: int = 0) -> tuple[str, list[Finding]]:
    """Status ("fail" / "pass") and findings of the lexical baseline on two batches."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    texts = list(ref_texts) + list(cur_texts)
    ids = list(ref_ids) + list(cur_ids)
    n_ref = len(ref_texts)
    tfidf = TfidfVectorizer(min_df=2, stop_words="english", sublinear_tf=True).fit_transform(texts)
    counter = CountVectorizer(ngram_range=(1, 2), min_df=5, binary=True)
    x_bin = counter.fit_transform(texts)
    findings = (
        tfidf_clusters(tfidf, n_ref, ids, seed)
        + ngrams(x_bin, counter.get_feature_names_out(), n_ref, ids)
        + near_duplicate_groups(tfidf, n_ref, ids)
    )
    status = "fail" if any(f.severity == "fail" for f in findings) else "pass"
    return status, findings

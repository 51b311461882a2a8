"""Lexical topics: content words the current batch over- or under-selects, grouped into topics.

Embeddings of templated records cluster by template, and a keyword-defined topic can be
spread all over the embedding space; neither is a cluster, but both change how many
records carry the topic's words.  This check reads the words directly:

1. Each record's content words (:func:`auditor.terms.is_content_word`, at least 3
   letters) from its text with its prompt template's fixed text removed
   (:func:`auditor.terms.strip_template`, label-blind), counted once per record.
2. Per word carried by at least ``min_records`` records of the union, a one-sided Fisher
   exact test per direction (current share above or below the reference share), exact
   under exchangeability given the margins.  A direction that fails the effect filters
   (share ratio ``min_ratio``, ``min_records`` records of excess) keeps p = 1, as in
   :mod:`auditor.enrichment`; Benjamini-Hochberg across every word and direction.
3. Significant words of one direction that are carried by overlapping records (a share
   ``group_overlap`` of the smaller carrier set) are one topic: the words that occur
   together in the records are what a reader recognises as the topic.  A topic's
   ``p_value`` is the smallest adjusted p of its words.
   Besides single words and the co-occurrence tree, *context groups*
   (:func:`context_groups`) are tested: words whose records resemble each other (the
   mean embedding of the records carrying a word, pooled over both inputs), cut from an
   average-linkage tree at two resolutions, rarer words (>= 3 records) included.  A
   keyword topic whose words neither co-occur nor are common enough to test alone
   ("python", "sql", "def", "function") is one such group.  Every group is built without
   the labels, so all Fisher tests stay exact; they share the one BH family.
4. An over-selected topic names the current records carrying any of its words; an
   under-selected one the reference records carrying them (what the current batch
   dropped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from auditor.checks import register
from auditor.engine import distributed_word_carriers
from auditor.stats import (
    benjamini_hochberg,
    fisher_exact_greater,
    fisher_exact_less,
    large_shift,
    share_ratio,
)
from auditor.terms import is_content_word, phrase_words, strip_template
from auditor.textutil import excerpt
from auditor.types import Finding, Side, Snapshot

CHECK = "term_topics"
EXAMPLES = 3
MIN_WORD_CHARS = 3
LABEL_WORDS = 5


def _record_words(texts: Sequence[str]) -> list[set[str]]:
    return [
        {w for w in t.split() if len(w) >= MIN_WORD_CHARS and w.isalpha() and is_content_word(w)} for t in texts
    ]


# Words in the co-occurrence tree: the most widely carried ones (a label-blind choice),
# at most MAX_CELLS words x records of carrier bits held at once.
MAX_WORDS = 1500
MAX_CELLS = 60_000_000


def word_tree(carriers: Sequence[np.ndarray], n_docs: int) -> list[np.ndarray]:
    """Groups of words to test: every word alone, then every inner node (without the
    root) of an average-linkage tree over the words, by the cosine similarity of their
    carrier sets (words carried by the same records join first).

    Built from the union's carrier sets only, so it never sees which input a record came
    from: the groups are as valid to test as single words.  Returns word-index arrays.
    """
    v = len(carriers)
    nodes = [np.array([i]) for i in range(v)]
    if v < 3:
        return nodes
    from scipy.cluster.hierarchy import linkage
    from scipy.sparse import csr_matrix

    rows = np.concatenate([np.full(c.size, i) for i, c in enumerate(carriers)])
    cols = np.concatenate(carriers)
    m = csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(v, n_docs))
    co = (m @ m.T).toarray()
    df = np.sqrt(np.diag(co)).astype(np.float64)
    dist = 1.0 - co / np.maximum(np.outer(df, df), 1e-12)
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2.0, 0.0, None)
    iu = np.triu_indices(v, 1)
    z = linkage(dist[iu], method="average")
    for a, b in z[:, :2].astype(int):
        nodes.append(np.concatenate([nodes[a], nodes[b]]))
    return nodes[:-1]


# Words that enter only through context groups: carried by at least this many records
# (each alone is too rare to test), at most MAX_GROUP_WORDS of them (the most carried).
GROUP_MIN_RECORDS = 3
MAX_GROUP_WORDS = 3000
# cosine distances at which the context tree is cut into flat groups (two resolutions)
CONTEXT_CUTS = (0.3, 0.5)


def context_vectors(carriers: Sequence[np.ndarray], emb: np.ndarray) -> np.ndarray | None:
    """Each word's context vector: the mean of the (pooled-centred) embeddings of the
    records that carry it, unit length; None when the embeddings carry no direction."""
    from scipy.sparse import csr_matrix

    e = np.asarray(emb, dtype=np.float64)
    e = e - e.mean(axis=0)
    rows = np.concatenate([np.full(c.size, i) for i, c in enumerate(carriers)])
    cols = np.concatenate(carriers)
    m = csr_matrix((np.ones(rows.size), (rows, cols)), shape=(len(carriers), e.shape[0]))
    vec = np.asarray(m @ e) / np.maximum(np.asarray(m.sum(axis=1)), 1.0)
    norm = np.linalg.norm(vec, axis=1)
    if not np.all(norm > 1e-9):
        return None
    return vec / norm[:, None]


def context_groups(
    carriers: Sequence[np.ndarray], emb: np.ndarray, cuts: Sequence[float] = CONTEXT_CUTS
) -> list[np.ndarray]:
    """Groups of words used in the same kind of record: the flat clusters (two words or
    more) of an average-linkage tree over the words' :func:`context_vectors`, cut at each
    cosine distance in ``cuts``.

    The words of a topic rarely occur in one record ("python", "sql", "html", "def") but
    the records that carry them resemble each other, so their context vectors are close
    (on Alpaca: python -> print, def, import, code, program), and a group pools words
    each too rare to test alone.  Built from both inputs' records without their labels,
    so its Fisher tests stay exact (see :mod:`auditor.enrichment`).  Returns word-index
    arrays; none when the embeddings carry no direction (placeholders).
    """
    v = len(carriers)
    if v < 3 or emb.shape[0] == 0:
        return []
    vec = context_vectors(carriers, emb)
    if vec is None:
        return []
    from scipy.cluster.hierarchy import fcluster, linkage

    dist = np.clip(1.0 - vec @ vec.T, 0.0, None)
    iu = np.triu_indices(v, 1)
    z = linkage(((dist + dist.T) / 2.0)[iu], method="average")
    groups: dict[tuple[int, ...], np.ndarray] = {}
    for cut in cuts:
        labels = fcluster(z, cut, criterion="distance")
        order = np.argsort(labels, kind="stable")
        for g in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
            if g.size >= 2:
                groups.setdefault(tuple(sorted(g.tolist())), np.sort(g))
    return list(groups.values())


def _context_nodes(
    vocab: list[str],
    word_docs: list[np.ndarray],
    carriers: dict[str, list[int]],
    by_count: Sequence[str],
    ref: Snapshot,
    cur: Snapshot,
    nodes: Sequence[np.ndarray],
) -> list[np.ndarray]:
    """Context groups over the most carried words (extends ``vocab`` and ``word_docs`` in
    place with the rarer words that enter only through a group); groups already in
    ``nodes`` are not tested twice."""
    pool = [w for w in by_count[:MAX_GROUP_WORDS] if len(carriers[w]) >= GROUP_MIN_RECORDS]
    if len(pool) < 3:
        return []
    index_of = {w: i for i, w in enumerate(vocab)}
    for w in pool:
        if w not in index_of:
            index_of[w] = len(vocab)
            vocab.append(w)
            word_docs.append(np.asarray(carriers[w], dtype=np.int64))
    gw = np.asarray([index_of[w] for w in pool], dtype=np.int64)
    emb = np.concatenate([np.asarray(ref.embeddings), np.asarray(cur.embeddings)], axis=0)
    seen = {tuple(sorted(n.tolist())) for n in nodes}
    out = []
    for g in context_groups([word_docs[int(i)] for i in gw], emb, CONTEXT_CUTS):
        key = tuple(sorted(gw[g].tolist()))
        if key not in seen:
            seen.add(key)
            out.append(np.sort(gw[g]))
    return out


# A word carried by all 10 records of one side and none of the other has Fisher
# p = 1/C(20, 10) = 5.4e-6: enough to survive BH over a few hundred tested words.
@register(CHECK, min_records=10)
def term_topics(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    alpha: float = 0.05,
    min_ratio: float = 1.5,
    min_records: int = 10,
    merge_overlap: float = 0.6,
    max_findings: int = 20,
    tree: bool = True,
    context: bool = True,
) -> list[Finding]:
    """Content words carried by a larger or smaller share of current than reference
    records (template text removed), grouped into topics by co-occurrence.

    One-sided Fisher exact test per word and direction, Benjamini-Hochberg across all
    (``p_value`` is the smallest adjusted p of a topic's words).  A word counts when its
    adjusted p <= ``alpha``, its share ratio is >= ``min_ratio`` in its direction and at
    least ``min_records`` records carry the excess.  Words whose carrier sets overlap by
    ``group_overlap`` of the smaller are one topic; at most ``max_findings`` topics.
    With ``tree`` the co-occurrence tree's nodes are tested too, with ``context`` the
    label-blind context groups of words (:func:`context_groups`).
    Over-selected topics name the current records carrying their words, under-selected
    ones the reference records.
    """
    n_ref, n_cur = len(ref), len(cur)
    if n_ref == 0 or n_cur == 0:
        return []
    union = tuple(ref.texts) + tuple(cur.texts)
    prompts = (
        tuple(ref.batch.prompts) + tuple(cur.batch.prompts)
        if ref.batch.prompts is not None and cur.batch.prompts is not None
        else None
    )
    if prompts is not None:
        # template text lives in the prompts; an answer that recurs (a class label such as
        # "Business") is content, and a label's share is exactly what selection changes
        responses = tuple(ref.batch.responses or ()) + tuple(cur.batch.responses or ())
        stripped = strip_template(prompts, prompts, n_ref)
        if len(responses) == len(stripped):
            stripped = [f"{p} {' '.join(phrase_words(r))}" for p, r in zip(stripped, responses, strict=True)]
    else:
        stripped = strip_template(union, None, n_ref)
    # --- engine hook (auditor.engine): on the Ray engine a distributed pass (only the
    # words carried by enough records come back: the only ones read below, the context
    # groups' rarer words included) ---
    floor = min(min_records, GROUP_MIN_RECORDS) if context else min_records
    carriers = distributed_word_carriers(stripped, _record_words, min_records=floor)
    if carriers is None:
        words = _record_words(stripped)
        carriers = {}
        for d, ws in enumerate(words):
            for w in ws:
                carriers.setdefault(w, []).append(d)
    # --- end engine hook ---
    by_count = sorted(carriers, key=lambda w: (-len(carriers[w]), w))
    vocab = [w for w in by_count if len(carriers[w]) >= min_records]
    n_docs = n_ref + n_cur
    vocab = vocab[: max(3, min(MAX_WORDS, MAX_CELLS // max(1, n_docs * 4)))] if vocab else vocab
    if not vocab:
        return []
    word_docs = [np.asarray(carriers[w], dtype=np.int64) for w in vocab]
    nodes = word_tree(word_docs, n_docs) if tree else [np.array([i]) for i in range(len(vocab))]
    if context:
        nodes += _context_nodes(vocab, word_docs, carriers, by_count, ref, cur, nodes)
    raw: list[tuple[int, str, np.ndarray, int, int, float, float, bool]] = []
    for ni, words_idx in enumerate(nodes):
        docs = word_docs[int(words_idx[0])] if words_idx.size == 1 else np.unique(
            np.concatenate([word_docs[int(i)] for i in words_idx])
        )
        a = int(np.count_nonzero(docs >= n_ref))
        b = int(docs.size - a)
        ratio = share_ratio(a, b, n_cur, n_ref)
        big_over, big_under = large_shift(a, b, n_cur, n_ref, min_ratio, min_records)
        # a direction that cannot be reported keeps p = 1 (see auditor.enrichment)
        p_over = fisher_exact_greater(a, b, n_cur - a, n_ref - b) if big_over else 1.0
        p_under = fisher_exact_less(a, b, n_cur - a, n_ref - b) if big_under else 1.0
        raw.append((ni, "enriched", docs, a, b, p_over, ratio, big_over))
        raw.append((ni, "depleted", docs, a, b, p_under, ratio, big_under))
    q = benjamini_hochberg([r[5] for r in raw])
    n_tests = len(raw)
    flagged = sorted(
        ((float(qi), r) for r, qi in zip(raw, q, strict=True) if r[7] and qi <= alpha),
        key=lambda s: (s[0], s[1][5], -s[1][2].size),
    )
    # most significant first; a group whose records lie mostly inside a kept group of the
    # same direction adds nothing and is folded into it
    kept: list[tuple[float, tuple, set[int]]] = []
    for qi, r in flagged:
        members = set(r[2].tolist())
        if any(k[1][1] == r[1] and len(members & k[2]) >= merge_overlap * len(members) for k in kept):
            continue
        kept.append((qi, r, members))
    findings: list[Finding] = []
    for qi, r, _ in kept:
        ni, direction, docs, a, b, p_raw, ratio, _ok = r
        side: Side = "current" if direction == "enriched" else "reference"
        lo, hi = (n_ref, n_docs) if side == "current" else (0, n_ref)
        rows = [int(d) - lo for d in docs if lo <= d < hi]
        # the group's words, most carried on the listed side first
        counts = [(int(np.count_nonzero((word_docs[int(i)] >= lo) & (word_docs[int(i)] < hi))), vocab[int(i)]) for i in nodes[ni]]
        terms = [w for _, w in sorted(counts, key=lambda c: (-c[0], c[1]))]
        expected = b * n_cur / n_ref
        snap = cur if side == "current" else ref
        label = ", ".join(f"'{t}'" for t in terms[:LABEL_WORDS])
        more = f" (+{len(terms) - LABEL_WORDS} more words)" if len(terms) > LABEL_WORDS else ""
        if direction == "enriched":
            summary = (
                f"topic {label}{more} over-selected: {a} current records carry these words "
                f"where the reference's share predicts {expected:.0f} ({ratio:.1f}x); all listed"
            )
        else:
            summary = (
                f"topic {label}{more} under-selected: {a} current records carry these words "
                f"where the reference's share predicts {expected:.0f} ({ratio:.2f}x); listed: "
                f"the {len(rows)} reference records that carry them"
            )
        findings.append(
            Finding(
                check=CHECK,
                summary=summary,
                side=side,
                record_ids=tuple(snap.ids[i] for i in rows),
                statistic=float(a),
                p_value=qi,
                effect_size=float(math.log2(ratio)),
                details={
                    "direction": direction,
                    "terms": terms[:50],
                    "n_terms": len(terms),
                    "n_current_carrying": a,
                    "n_reference_carrying": b,
                    "expected_current_from_reference_share": round(expected, 2),
                    "share_ratio": ratio,
                    "p_raw": p_raw,
                    "n_tests": n_tests,
                    "method": "one-sided Fisher exact per word group and direction (prompt template "
                    "text removed; every word and every node of a label-blind co-occurrence tree "
                    "over the words), Benjamini-Hochberg across all; overlapping groups merged",
                    "examples": [excerpt(snap.texts[i]) for i in rows[:EXAMPLES]],
                },
            )
        )
    findings.sort(key=lambda f: (f.p_value, -abs(f.effect_size or 0.0)))
    return findings[:max_findings]

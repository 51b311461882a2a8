"""ROUGE-L F-measure as the Self-Instruct and Alpaca filters compute it, made fast.

Both pipelines keep a generated instruction only if its ROUGE-L F-measure with every seed
and every earlier instruction is at most 0.7, scored by the ``rouge-score`` package with
``use_stemmer=False``.  That package's tokenizer lowercases, turns every run of characters
outside ``[a-z0-9]`` into a space and splits on whitespace; its F-measure is
``2 * p * r / (p + r)`` with ``p = lcs / len(prediction)``, ``r = lcs / len(target)``
(0 when either side has no tokens).  ``rouge_l`` reproduces both exactly, so scores match
``rouge-score`` bit for bit (the tests check it).

Speed.  A pairwise scan of 50,000 instructions is 1.25e9 LCS computations.  Two facts make
it cheap:

* the LCS of two token sequences is at most their multiset token overlap, so
  ``F <= 2 * overlap / (la + lb)``; a pair whose bound is under the threshold is skipped;
* a pair with ``F > t`` has ``overlap > t * la / (2 - t)`` for each side, so (prefix
  filtering, Bayardo, Ma and Srikant, "Scaling up all pairs similarity search", WWW 2007)
  two such records share a token among the ``la - ceil(t * la / (2 - t)) + 1`` globally
  rarest tokens of each.  Only pairs that do are looked at.

The exact LCS uses the bit-vector algorithm of Crochemore, Iliopoulos, Pinzon and Reid
("A fast and practical bit-vector algorithm for the longest common subsequence problem",
IPL 2001): one big-integer add per token of the other sequence.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_NON_ALNUM = re.compile(r"[^a-z0-9]+")

Tokens = tuple[str, ...]


def tokenize(text: str) -> Tokens:
    """rouge-score's tokenizer with ``use_stemmer=False``: lowercase, non-[a-z0-9] to spaces, split."""
    return tuple(_NON_ALNUM.sub(" ", text.lower()).split())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (bit-parallel)."""
    if len(a) < len(b):
        a, b = b, a  # the shorter one drives the loop
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def f_measure(lcs: int, la: int, lb: int) -> float:
    """rouge-score's ROUGE-L F from an LCS length and the two token counts (same float ops)."""
    if la == 0 or lb == 0:
        return 0.0
    precision = lcs / lb
    recall = lcs / la
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F-measure of two token sequences (``tokenize`` them first)."""
    return f_measure(lcs_length(a, b), len(a), len(b))


def _min_overlap(n: int, threshold: float) -> int:
    """Fewest shared tokens a record of ``n`` tokens needs with anything to score F > threshold."""
    need = math.ceil(threshold * n / (2.0 - threshold) - 1e-9)
    return max(1, min(n, need))


def _elements(toks: Tokens) -> list[tuple[str, int]]:
    """A token multiset as a set: the k-th occurrence of ``w`` is ``(w, k)``, so set overlap = multiset overlap."""
    seen: Counter[str] = Counter()
    out = []
    for t in toks:
        out.append((t, seen[t]))
        seen[t] += 1
    return out


def _overlap(a: Counter[str], b: Counter[str]) -> int:
    if len(a) > len(b):
        a, b = b, a
    return sum(min(c, b[w]) for w, c in a.items() if w in b)


@dataclass(frozen=True)
class NearestResult:
    """Exact max ROUGE-L of each query against a reference list, and which reference attains it."""

    score: np.ndarray  # float64, one per query (0.0 when nothing shares a token)
    index: np.ndarray  # int64, the first reference reaching ``score`` (-1 when score is 0)
    lcs_computed: int  # exact LCS evaluations made (the rest were pruned by the bound)


def max_rouge_to(queries: Sequence[Tokens], refs: Sequence[Tokens]) -> NearestResult:
    """Exact max ROUGE-L F of every query against every reference.

    Meant for a small reference side (the seeds): the overlap of every (query, reference)
    pair comes from one sparse product, and per query the references are tried in order of
    their upper bound until the bound cannot beat the best exact score found.
    """
    from scipy import sparse

    vocab: dict[tuple[str, int], int] = {}
    rows, cols = [], []
    for j, toks in enumerate(refs):
        for e in _elements(toks):
            rows.append(j)
            cols.append(vocab.setdefault(e, len(vocab)))
    r_mat = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(refs), max(1, len(vocab)))
    )
    q_rows, q_cols = [], []
    for i, toks in enumerate(queries):
        for e in _elements(toks):
            c = vocab.get(e)
            if c is not None:
                q_rows.append(i)
                q_cols.append(c)
    q_mat = sparse.csr_matrix(
        (np.ones(len(q_rows), dtype=np.int32), (q_rows, q_cols)), shape=(len(queries), r_mat.shape[1])
    )
    ref_len = np.array([len(t) for t in refs], dtype=np.float64)
    score = np.zeros(len(queries))
    index = np.full(len(queries), -1, dtype=np.int64)
    computed = 0
    step = 4096  # rows of the dense overlap block held at once
    for start in range(0, len(queries), step):
        block = (q_mat[start : start + step] @ r_mat.T).toarray()
        for off in range(block.shape[0]):
            i = start + off
            q = queries[i]
            if not q:
                continue
            ov = block[off]
            bound = 2.0 * ov / (len(q) + ref_len)
            best, best_j = 0.0, -1
            # stable order: among equal bounds the earlier reference is tried first
            for j in np.argsort(-bound, kind="stable"):
                if ov[j] == 0 or bound[j] + 1e-12 < best:
                    break
                s = rouge_l(q, refs[j])
                computed += 1
                if s > best or (s == best and best_j >= 0 and j < best_j):
                    best, best_j = s, int(j)
            score[i], index[i] = best, best_j
    return NearestResult(score=score, index=index, lcs_computed=computed)


@dataclass(frozen=True)
class CopyPair:
    """Record ``later`` scores ``score`` > threshold against the earlier record ``earlier``."""

    later: int
    earlier: int
    score: float


def near_copies_within(docs: Sequence[Tokens], threshold: float) -> tuple[list[CopyPair], dict[str, int]]:
    """Every (later, earlier) pair of ``docs`` with ROUGE-L F > ``threshold``, in file order.

    Each later record is paired with its best-scoring earlier record only (ties: the
    earliest).  Candidates come from prefix filtering on globally rarest tokens, then the
    overlap bound, then the exact LCS; the counters say how many pairs each stage kept.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be in (0, 1)")
    elems = [_elements(t) for t in docs]
    freq: Counter[tuple[str, int]] = Counter(e for es in elems for e in es)
    counts = [Counter(t) for t in docs]
    index: dict[tuple[str, int], list[int]] = defaultdict(list)
    pairs: list[CopyPair] = []
    stats = {"candidates": 0, "bound_passed": 0, "lcs_computed": 0}
    for i, es in enumerate(elems):
        n = len(es)
        if n == 0:
            continue
        # rarest first; ties broken by the element itself so the order is global and total
        es_sorted = sorted(es, key=lambda e: (freq[e], e))
        prefix = es_sorted[: n - _min_overlap(n, threshold) + 1]
        cands: set[int] = set()
        for e in prefix:
            cands.update(index[e])
        stats["candidates"] += len(cands)
        best, best_j = -1.0, -1
        lo, hi = n * threshold / (2.0 - threshold), n * (2.0 - threshold) / threshold
        for j in sorted(cands):
            m = len(docs[j])
            if m < lo - 1e-9 or m > hi + 1e-9:  # F <= 2 min / (la + lb) cannot pass
                continue
            ov = _overlap(counts[i], counts[j])
            if 2.0 * ov / (n + m) <= threshold:
                continue
            stats["bound_passed"] += 1
            stats["lcs_computed"] += 1
            s = rouge_l(docs[i], docs[j])
            if s > threshold and s > best:
                best, best_j = s, j
        if best_j >= 0:
            pairs.append(CopyPair(later=i, earlier=best_j, score=best))
        for e in prefix:
            index[e].append(i)
    return pairs, stats


def histogram(values: np.ndarray, bins: int = 20) -> dict[str, list[float] | list[int]]:
    """Counts of ``values`` in ``bins`` equal bins over [0, 1] (the last one closed), for reports."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=edges)
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}

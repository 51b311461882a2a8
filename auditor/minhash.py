"""MinHash and LSH over word 3-shingles: sub-quadratic candidate pairs of near-identical texts.

Used by the near-duplicate check for records and for responses; a pair found here is only a
candidate, which the caller confirms exactly (:func:`pair_jaccard` on the hashed sets).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import polars as pl

# a word for shingling: a run of word characters (letters, digits, underscore), lowercased
WORD_RE = re.compile(r"\w+")
# within an LSH bucket, pairs only between rows this far apart in sorted order (linear cost)
_BUCKET_SPAN = 32
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)


def words(text: str) -> list[str]:
    """Lowercased words of ``text`` as shingles see them."""
    return WORD_RE.findall(text.lower())


def shingles(text: str, n: int = 3) -> frozenset[str]:
    """Word n-shingles of lower-cased text; texts shorter than n words give one shingle."""
    ws = words(text)
    if len(ws) < n:
        return frozenset([" ".join(ws)])
    return frozenset(" ".join(ws[i : i + n]) for i in range(len(ws) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def shingle_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashed word 3-shingles of every text (as in :func:`shingles`), concatenated.

    Returns ``(values, starts)``: 32-bit values as uint64, and the offset of each text's
    first shingle; every text has at least one (texts under three words get one shingle of
    what they have).
    """
    # polars tokenises and hashes in native code: ~5x faster than a Python loop over words
    tokens = (
        pl.Series("text", list(texts), dtype=pl.String).str.to_lowercase().str.extract_all(WORD_RE.pattern)
    )
    lengths = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
    wh = tokens.explode().drop_nulls().hash(seed=0).to_numpy().astype(np.uint64)
    ends = np.cumsum(lengths)
    n_words = int(wh.size)
    if n_words >= 3:
        # word i starts a shingle when words i+1 and i+2 belong to the same text
        tid = np.repeat(np.arange(len(texts), dtype=np.int32), lengths)
        long_ok = tid[:-2] == tid[2:]
        del tid
        # uint64 arithmetic wraps: a cheap, order-sensitive mix of three word hashes
        sh_long = ((wh[:-2] * _MIX1) ^ (wh[1:-1] * _MIX2) ^ wh[2:])[long_ok]
        tid_long = np.repeat(np.arange(len(texts), dtype=np.int64), np.maximum(lengths - 2, 0))
        del long_ok
    else:
        sh_long, tid_long = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    short = np.flatnonzero(lengths < 3)
    sh_short = np.zeros(short.size, dtype=np.uint64)
    for j, t in enumerate(short):
        w = wh[ends[t] - lengths[t] : ends[t]]
        if w.size:
            sh_short[j] = np.bitwise_xor.reduce(w * np.array([_MIX1, _MIX2][: w.size], dtype=np.uint64))
    del wh
    values = np.concatenate([sh_long, sh_short])
    owner = np.concatenate([tid_long, short])
    del sh_long, tid_long
    if short.size:
        order = np.argsort(owner, kind="stable")
        values, owner = values[order], owner[order]
    values = (values >> np.uint64(32)) ^ (values & np.uint64(0xFFFFFFFF))
    starts = np.searchsorted(owner, np.arange(len(texts)))
    return values, starts


def minhash_signatures(texts: Sequence[str], *, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (Broder 1997) of the texts' word 3-shingle sets, shape (n, num_perm).

    Hash family: ``(a x + b) mod 2^32`` on 32-bit shingle hashes, odd ``a`` and ``b`` drawn
    from ``seed`` (each an odd-multiplier bijection of the 32-bit hashes; 32-bit arithmetic
    is ~4x faster than 64-bit here).  The fraction of equal columns of two signatures
    estimates the Jaccard similarity of the two sets; on edited Alpaca pairs the estimate
    is unbiased with the binomial spread sqrt(J(1 - J)/num_perm).
    """
    values, starts = shingle_hashes(texts)
    return signatures(values, starts, num_perm=num_perm, seed=seed)


def signatures(values: np.ndarray, starts: np.ndarray, *, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures of hashed shingle sets laid out as :func:`shingle_hashes` returns them."""
    x = values.astype(np.uint32)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    sig = np.empty((len(starts), num_perm), dtype=np.uint32)
    if len(starts) == 0:
        return sig
    for j in range(num_perm):
        # one hash function at a time, in place: one n_shingles temporary
        h = x * a[j]
        h += b[j]
        sig[:, j] = np.minimum.reduceat(h, starts)
    return sig


def lsh_candidate_pairs(sig: np.ndarray, *, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(lo, hi)`` of rows whose signatures agree on all ``rows`` values of some band.

    Banding (Indyk & Motwani 1998; Leskovec et al., Mining of Massive Datasets, ch. 3): a
    pair of Jaccard similarity J is a candidate with probability 1 - (1 - J^rows)^bands.
    Within a bucket, pairs are formed between rows at most ``_BUCKET_SPAN`` apart in sorted
    order, so a bucket of thousands of identical texts costs linear, not quadratic, work
    and still ends up in one connected component.
    """
    return pairs_from_band_keys(band_keys(sig, bands=bands, rows=rows))


def band_keys(sig: np.ndarray, *, bands: int, rows: int) -> np.ndarray:
    """One 64-bit bucket key per (row, band), shape (n, bands): a row-wise function of the
    signature, so shards of rows can compute theirs anywhere (``auditor.engine``)."""
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        cols = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
        key = cols[:, 0].copy()
        for c in range(1, cols.shape[1]):
            key = (key * _MIX1) ^ cols[:, c]
        keys[:, band] = key
    return keys


def pairs_from_band_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs of :func:`lsh_candidate_pairs` from precomputed band keys."""
    n = keys.shape[0]
    # Pair codes (lo * n + hi) are merged band by band into one sorted set: many copies of
    # one text share a bucket in every band and give the same pairs 20 times over, so
    # holding each band's pairs until the end cost ~20x the distinct pairs (5.6 GB at
    # 200,000 records that repeat 5,000 texts; the result is the same sorted set).
    uniq = np.zeros(0, dtype=np.int64)
    for band in range(keys.shape[1]):
        key = keys[:, band]
        order = np.argsort(key, kind="stable")
        ks = key[order]
        found: list[np.ndarray] = []
        for off in range(1, min(_BUCKET_SPAN, n - 1) + 1):
            same = ks[off:] == ks[:-off]
            # keys are sorted, so once no run is longer than `off` none is longer than off + 1
            if not same.any():
                break
            a, b = order[:-off][same].astype(np.int64), order[off:][same].astype(np.int64)
            found.append(np.minimum(a, b) * n + np.maximum(a, b))
        if found:
            # a band's pairs are distinct (distinct sorted positions); sorted, they join the
            # sorted set as a second run, which a stable (merge) sort joins in linear time
            codes = np.concatenate(found)
            codes.sort()
            merged = np.concatenate([uniq, codes])
            merged.sort(kind="stable")
            keep = np.ones(merged.size, dtype=bool)
            keep[1:] = merged[1:] != merged[:-1]
            uniq = merged[keep]
    return uniq // n, uniq % n


def pair_jaccard(values: np.ndarray, starts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of the hashed shingle sets of each pair ``(lo[i], hi[i])``.

    Equal to the Jaccard of the string sets of :func:`shingles` up to 32-bit hash
    collisions (~1e-6 per pair).
    """
    ends = np.append(starts[1:], values.size).astype(np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    out = np.empty(lo.size, dtype=np.float64)
    # Vectorised over chunks of pairs: a Python loop of np.intersect1d per pair took 47 s
    # for the 600,000 candidate pairs of 60,000 records that repeat 5,000 texts, and the
    # pairs grow with the records.  Memory: ~_JACCARD_CHUNK shingles of both sides at once.
    cum = np.cumsum((ends[lo] - starts[lo]) + (ends[hi] - starts[hi]))
    first = 0
    while first < lo.size:
        done = int(cum[first - 1]) if first else 0
        last = max(first + 1, int(np.searchsorted(cum, done + _JACCARD_CHUNK, side="right")))
        sl = slice(first, last)
        a_u, a_n = _row_sets(values, starts[lo[sl]], ends[lo[sl]])
        b_u, b_n = _row_sets(values, starts[hi[sl]], ends[hi[sl]])
        both = np.concatenate([a_u, b_u])
        both.sort(kind="stable")  # two sorted runs: a linear merge
        same = both[1:] == both[:-1]
        # a (pair, value) key twice: the value is in both sets (each set is distinct)
        inter = np.bincount((both[1:][same] >> np.uint64(32)).astype(np.int64), minlength=last - first)
        out[sl] = inter / (a_n + b_n - inter)
        first = last
    return out


_JACCARD_CHUNK = 4_000_000


def _row_sets(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's distinct shingle hashes as sorted ``(position << 32) | hash`` keys (the
    position of the row in ``starts``), and the size of each row's set."""
    lengths = ends - starts
    total = int(lengths.sum())
    pos = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    # positions in `values` of every row's shingles, rows one after another
    offset = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    keys = (pos.astype(np.uint64) << np.uint64(32)) | values[
        np.arange(total, dtype=np.int64) + offset
    ].astype(np.uint64)
    keys.sort()
    keep = np.ones(total, dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]
    keys = keys[keep]
    return keys, np.bincount(pos[keep], minlength=lengths.size)

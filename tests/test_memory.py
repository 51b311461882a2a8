"""Bounded memory at scale: the LSH pair merge and the checks that subsample say so."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.checks.drift import classifier
from auditor.minhash import _BUCKET_SPAN, pairs_from_band_keys
from auditor.textutil import batch_from_texts
from auditor.types import ModelInfo, Snapshot


def _all_band_pairs(keys: np.ndarray) -> set[tuple[int, int]]:
    """The candidate pairs by definition: per band, rows at most _BUCKET_SPAN apart in
    stable key order with equal keys, over all bands, as a set."""
    out: set[tuple[int, int]] = set()
    n = keys.shape[0]
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        ks = keys[order, band]
        for i in range(n):
            for j in range(i + 1, min(n, i + _BUCKET_SPAN + 1)):
                if ks[j] == ks[i]:
                    a, b = int(order[i]), int(order[j])
                    out.add((min(a, b), max(a, b)))
    return out


@pytest.mark.parametrize("copies", [1, 3, 80])
def test_band_pairs_merged_per_band_equal_the_definition(copies: int) -> None:
    # rows repeating a few distinct texts (buckets larger than the span, shared by every
    # band) plus rows whose keys differ in some bands: the shape of a corpus with copies
    rng = np.random.default_rng(copies)
    base = rng.integers(0, 2**63, size=(6, 5), dtype=np.uint64)
    keys = base[np.arange(6 * copies) % 6].copy()
    flip = rng.random(keys.shape) < 0.3
    keys[flip] = rng.integers(0, 4, size=int(flip.sum()), dtype=np.uint64)  # a few small shared keys
    lo, hi = pairs_from_band_keys(keys)
    got = list(zip(lo.tolist(), hi.tolist(), strict=True))
    assert got == sorted(_all_band_pairs(keys))  # sorted, distinct, and exactly the definition
    assert lo.dtype == np.int64 and hi.dtype == np.int64
    if copies == 80:
        assert len(got) > 6 * 80  # the heavy buckets do produce pairs beyond a chain


def test_band_pairs_none_and_tiny() -> None:
    keys = np.arange(12, dtype=np.uint64).reshape(4, 3)
    lo, hi = pairs_from_band_keys(keys)
    assert lo.size == 0 and hi.size == 0
    lo, hi = pairs_from_band_keys(np.zeros((1, 3), dtype=np.uint64))
    assert lo.size == 0
    lo, hi = pairs_from_band_keys(np.zeros((2, 3), dtype=np.uint64))
    assert lo.tolist() == [0] and hi.tolist() == [1]


MODEL = ModelInfo(name="synthetic", sha256="0" * 64, dim=8)


def _snap(x: np.ndarray, tag: str) -> Snapshot:
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return Snapshot(
        batch=batch_from_texts([f"{tag} record {i}" for i in range(len(x))]), embeddings=x, model=MODEL
    )


def test_classifier_says_when_it_subsamples() -> None:
    rng = np.random.default_rng(0)
    ref, cur = _snap(rng.normal(size=(120, 8)), "r"), _snap(rng.normal(size=(90, 8)), "c")
    whole = classifier(ref, cur, seed=0)[0]
    assert "subsample" not in whole.summary
    assert (whole.details["n_reference_tested"], whole.details["n_current_tested"]) == (120, 90)
    part = classifier(ref, cur, seed=0, max_per_side=50)[0]
    assert "on a 50+50 subsample" in part.summary
    assert (part.details["n_reference_tested"], part.details["n_current_tested"]) == (50, 50)


@pytest.mark.parametrize("chunk", [1, 7, 4_000_000])
def test_pair_jaccard_vectorised_equals_python_sets(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    import auditor.minhash as mh

    monkeypatch.setattr(mh, "_JACCARD_CHUNK", chunk)  # chunks of one pair up to all pairs at once
    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 12, size=40)
    # few distinct values, repeated within a row: overlaps and in-row duplicates
    values = rng.integers(0, 2**32 - 1 if chunk == 1 else 15, size=int(sizes.sum())).astype(np.uint64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lo = rng.integers(0, 40, size=300)
    hi = rng.integers(0, 40, size=300)
    sets = [set(values[s : s + n].tolist()) for s, n in zip(starts, sizes, strict=True)]
    want = [len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in zip(lo, hi, strict=True)]
    got = mh.pair_jaccard(values, starts, lo, hi)
    assert got.tolist() == want  # exact: the same integer ratio
    assert mh.pair_jaccard(values, starts, lo[:0], hi[:0]).size == 0


def test_chunked_tokenizer_gives_the_one_pass_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    import auditor.checks.triggers as trig
    from tests.helpers import alpaca_texts

    texts = list(alpaca_texts()[:300]) + ["", "tango-delta Tango DELTA 7"]
    monkeypatch.setattr(trig, "_TOKENIZE_CHUNK", 10**9)
    one_tokens, one_doc, one_words = trig._tokenize(texts)
    one = trig.count_ngrams(texts, 4, 3)
    monkeypatch.setattr(trig, "_TOKENIZE_CHUNK", 7)
    tokens, doc, words = trig._tokenize(texts)
    assert words == one_words and len(set(words)) == len(words)
    np.testing.assert_array_equal(tokens, one_tokens)
    np.testing.assert_array_equal(doc, one_doc)
    assert [words[t] for t in tokens[doc == len(texts) - 1]] == ["tango", "delta", "tango", "delta", "7"]
    chunked = trig.count_ngrams(texts, 4, 3)
    for a, b in zip(one.df + one.pair_doc, chunked.df + chunked.pair_doc, strict=True):
        np.testing.assert_array_equal(a, b)

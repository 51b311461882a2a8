"""The distributed MinHash LSH pass (auditor.engine.aggregate) equals the local one, row
for row, without Ray: the map step on shards gives the rows of the whole, and the reduce
gives the same candidate pairs and Jaccard values (the Ray runs are in test_engine_ray)."""

from __future__ import annotations

import numpy as np

from auditor import planted
from auditor.checks.duplicates import near_duplicate_edges
from auditor.engine import _LSH, distributed_lsh, passes
from auditor.engine.aggregate import lsh_from_keys, shard_band_keys
from auditor.minhash import lsh_candidate_pairs, pair_jaccard, shingle_hashes, signatures
from tests.helpers import alpaca_records


def _texts() -> list[str]:
    pool = planted.records_from_alpaca(alpaca_records()[:800])
    sc = planted.near_duplicates(pool, seed=5, n=300, groups=3, copies=10)
    # short texts (under three words) take their own path in shingle_hashes
    return [*sc.current.texts, *sc.reference.texts, "ok", "", "two words"]


def test_sharded_keys_and_pairs_equal_the_whole() -> None:
    texts = _texts()
    values, starts = shingle_hashes(texts)
    sig = signatures(values, starts, num_perm=40, seed=7)
    lo, hi = lsh_candidate_pairs(sig, bands=20, rows=2)
    assert lo.size > 20, "the planted near-duplicates must give candidate pairs"
    keys = np.concatenate(
        [shard_band_keys(texts[s : s + 97], bands=20, rows=2, seed=7) for s in range(0, len(texts), 97)]
    )
    np.testing.assert_array_equal(keys, shard_band_keys(texts, bands=20, rows=2, seed=7))
    dlo, dhi, dval, dstart = lsh_from_keys(texts, keys)
    np.testing.assert_array_equal(dlo, lo)
    np.testing.assert_array_equal(dhi, hi)
    np.testing.assert_array_equal(pair_jaccard(dval, dstart, dlo, dhi), pair_jaccard(values, starts, lo, hi))
    # the driver keeps only the candidate rows' shingles
    assert dval.size < values.size


def test_hook_is_off_on_the_local_engine_and_used_when_set() -> None:
    texts = _texts()
    with passes("local"):
        assert distributed_lsh(texts, bands=20, rows=2, seed=0) is None
    local = near_duplicate_edges(None, texts, cosine_threshold=0.9, jaccard_threshold=0.5, seed=3)
    calls: list[int] = []

    def sharded(ts, *, bands, rows, seed):  # type: ignore[no-untyped-def]
        calls.append(len(ts))
        keys = np.concatenate(
            [
                shard_band_keys(ts[s : s + 50], bands=bands, rows=rows, seed=seed)
                for s in range(0, len(ts), 50)
            ]
        )
        return lsh_from_keys(ts, keys)

    token = _LSH.set(sharded)
    try:
        remote = near_duplicate_edges(None, texts, cosine_threshold=0.9, jaccard_threshold=0.5, seed=3)
    finally:
        _LSH.reset(token)
    assert calls == [len(texts)]
    assert local[0].size > 0
    for a, b in zip(local, remote):
        np.testing.assert_array_equal(a, b)

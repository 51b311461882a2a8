"""The checks' heavy passes as distributed aggregations on Ray, equal to the local engine's.

Implemented: the near-duplicate check's MinHash LSH pass (``auditor.minhash``).  At a
million records it is the check's largest pass: every word 3-shingle of every text is
hashed (~100 uint64 per record, plus the same again in temporaries) and hashed again by
each of the 40 MinHash functions.  Here:

- map (Ray tasks, one per ``shard`` texts): shingle hashes -> MinHash signatures -> one
  64-bit bucket key per band, ``(shard, bands)`` uint64 back to the driver.  Every step
  is a row-wise function of one text (word hashes are seeded, not per batch), so a shard's
  keys are exactly the rows of the local engine's keys;
- reduce (driver): sort each band's keys and pair neighbours in a bucket
  (``auditor.minhash.pairs_from_band_keys``, the local code); then the shingles of the
  rows in a candidate pair only, for the exact Jaccard confirmation.

The driver holds 8 bytes x bands per record (160 B at 20 bands) instead of every shingle:
~0.2 GB instead of several GB at a million records.  Nothing is subsampled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auditor.minhash import band_keys, pairs_from_band_keys, shingle_hashes, signatures

SHARD = 50_000  # texts per map task: ~40 MB of shingles in a worker


def shard_band_keys(texts: Sequence[str], *, bands: int, rows: int, seed: int) -> np.ndarray:
    """The map step: ``(len(texts), bands)`` LSH bucket keys of the texts' MinHash signatures."""
    values, starts = shingle_hashes(texts)
    sig = signatures(values, starts, num_perm=bands * rows, seed=seed)
    return band_keys(sig, bands=bands, rows=rows)


def shingles_of_rows(texts: Sequence[str], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, starts)`` as :func:`shingle_hashes` lays them out for all of ``texts``,
    but holding only the given rows' shingles (every other row is an empty range)."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    n = len(texts)
    if rows.size == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(n, dtype=np.int64)
    values, sub_starts = shingle_hashes([texts[int(i)] for i in rows])
    lengths = np.zeros(n, dtype=np.int64)
    lengths[rows] = np.diff(np.append(sub_starts, values.size))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return values, starts


def lsh_from_keys(
    texts: Sequence[str], keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reduce step: candidate pairs from the band keys plus the shingles their rows need."""
    lo, hi = pairs_from_band_keys(keys)
    values, starts = shingles_of_rows(texts, np.concatenate([lo, hi]))
    return lo, hi, values, starts


def _keys_task(texts: list[str], bands: int, rows: int, seed: int) -> np.ndarray:
    return shard_band_keys(texts, bands=bands, rows=rows, seed=seed)


@dataclass
class PassStats:
    """What the distributed passes of one run did (for benchmarks and logs)."""

    calls: list[dict[str, Any]] = field(default_factory=list)


class RayPasses:
    """The Ray backend of :func:`auditor.engine.passes`: joins ``address`` (or starts a
    local Ray) on the first pass asked for, and leaves it as it found it."""

    def __init__(
        self,
        address: str | None = None,
        *,
        shard: int = SHARD,
        num_cpus: int | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if shard < 1:
            raise ValueError(f"shard: {shard} (expected at least 1)")
        self.address = address
        self.shard = shard
        self.num_cpus = num_cpus
        self.init_kwargs = init_kwargs
        self.stats = PassStats()
        self._engine: Any = None
        self._task: Any = None

    def __enter__(self) -> RayPasses:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._engine is not None:
            self._engine.__exit__(*exc)
            self._engine = None

    def _ray(self) -> Any:
        from auditor.engine.ray_engine import RayEngine, _ray

        if self._engine is None:
            eng = RayEngine(self.address, num_cpus=self.num_cpus, init_kwargs=self.init_kwargs)
            self._engine = eng.__enter__()
        ray = _ray()
        if self._task is None:
            self._task = ray.remote(num_cpus=1)(_keys_task)
        return ray

    def lsh(
        self, texts: Sequence[str], *, bands: int, rows: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``distributed_lsh`` on the cluster: map tasks of ``shard`` texts, reduce here."""
        t0 = time.perf_counter()
        ray = self._ray()
        n = len(texts)
        keys = np.empty((n, bands), dtype=np.uint64)
        pending = {}
        for s in range(0, n, self.shard):
            ref = self._task.remote(list(texts[s : s + self.shard]), bands, rows, seed)
            pending[ref] = s
        while pending:
            # fill in place as shards finish: each result is freed once copied
            done, _ = ray.wait(list(pending), num_returns=1)
            s = pending.pop(done[0])
            part = ray.get(done[0])
            keys[s : s + part.shape[0]] = part
        t_map = time.perf_counter() - t0
        out = lsh_from_keys(texts, keys)
        self.stats.calls.append(
            {"pass": "minhash_lsh", "records": n, "shards": -(-n // self.shard), "map_s": round(t_map, 3),
             "total_s": round(time.perf_counter() - t0, 3), "candidate_pairs": int(out[0].size)}
        )  # fmt: skip
        return out

"""The checks' heavy passes as distributed aggregations on Ray, equal to the local engine's.

Each pass is a set of map steps over shards of ``SHARD`` records plus reduce steps on the
driver, written once against an :class:`Executor` (``Serial`` here, ``RayPasses`` on Ray);
a check reaches it through its hook in :mod:`auditor.engine`.  The passes (what moves and
what the driver keeps: docs/scale.md):

- MinHash LSH (near_duplicates): band keys per shard, bucket pairing and exact Jaccard on
  the driver.  Every step is a row-wise function of one text (word hashes are seeded, not
  per batch), so a shard's keys are exactly the rows of the local engine's keys; the
  driver holds 160 B per record instead of every shingle;
- n-gram counts (triggers' ``count_ngrams``) and word carriers (term_topics): per-shard
  vocabularies, codes and counts merged exactly (set unions, integer sums, sorts);
- k-means assignment and kNN search (``auditor.index``): row-wise faiss searches per shard;
- random-feature MMD sums (mmd): additive per-shard feature sums, the permutations drawn
  on the driver exactly as the local code draws them.

Nothing is subsampled here.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from auditor.errors import AuditorError
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


@functools.cache
def code_fingerprint() -> str:
    """sha256 over the path and content of every Python source of the installed auditor
    package: a map step runs the worker's copy of the code, so it must be the driver's."""
    import auditor

    root = Path(auditor.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _same_code(fingerprint: str) -> None:
    mine = code_fingerprint()
    if fingerprint != mine:
        raise AuditorError(
            f"ray worker on {os.uname().nodename}: auditor code {mine[:12]}, the driver's is "
            f"{fingerprint[:12]} (expected the same auditor version on every node)"
        )


def _keys_task(fingerprint: str, texts: list[str], bands: int, rows: int, seed: int) -> np.ndarray:
    _same_code(fingerprint)
    return shard_band_keys(texts, bands=bands, rows=rows, seed=seed)


def _apply(fingerprint: str, fn: Callable[..., Any], *args: Any) -> Any:
    _same_code(fingerprint)
    return fn(*args)


def _get(ray: Any, refs: Any) -> Any:
    """``ray.get``, with an AuditorError raised in a task raised here as itself."""
    from auditor.engine.ray_engine import _auditor_cause

    try:
        return ray.get(refs)
    except Exception as e:
        cause = _auditor_cause(e)
        if cause is not None:
            raise cause from None
        raise


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
        shard: int | None = None,
        num_cpus: int | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        shard = SHARD if shard is None else shard  # read at call time, so tests can lower it
        if shard < 1:
            raise ValueError(f"shard: {shard} (expected at least 1)")
        self.address = address
        self.shard = shard
        self.num_cpus = num_cpus
        self.init_kwargs = init_kwargs
        self.stats = PassStats()
        self._engine: Any = None
        self._task: Any = None
        self._apply: Any = None

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
            self._apply = ray.remote(num_cpus=1)(_apply)
        return ray

    def map(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], *, stateful: bool = False
    ) -> list[Any]:
        """:class:`Executor` on Ray: one task per shard; a stateful step's state stays in
        the object store (its handle is an ObjectRef, resolved where the next step runs)."""
        ray = self._ray()
        fp = code_fingerprint()
        if not stateful:
            return list(_get(ray, [self._apply.remote(fp, fn, *a) for a in args]))
        refs = [self._apply.options(num_returns=2).remote(fp, fn, *a) for a in args]
        results = _get(ray, [r[0] for r in refs])
        return [(res, r[1]) for res, r in zip(results, refs)]

    def put(self, obj: Any) -> Any:
        """:class:`Executor` on Ray: ``obj`` in the object store, read in place by each task
        on a node (numpy arrays are not copied)."""
        return self._ray().put(obj)

    def _log(self, name: str, n: int, t0: float, **extra: Any) -> None:
        self.stats.calls.append(
            {"pass": name, "records": n, "shards": max(1, -(-n // self.shard)),
             "total_s": round(time.perf_counter() - t0, 3), **extra}
        )  # fmt: skip

    def ngrams(self, texts: Sequence[str], *, max_n: int, min_count: int) -> NGramTuple:
        """``distributed_ngrams`` on the cluster (see :func:`ngram_counts`)."""
        t0 = time.perf_counter()
        out = ngram_counts(texts, max_n, min_count, shard=self.shard, ex=self)
        self._log("ngrams", len(texts), t0, levels=len(out[1]))
        return out

    def carriers(
        self,
        texts: Sequence[str],
        words_fn: Callable[[Sequence[str]], Sequence[Iterable[str]]],
        *,
        min_records: int,
    ) -> dict[str, list[int]]:
        """``distributed_word_carriers`` on the cluster (see :func:`word_carriers`)."""
        t0 = time.perf_counter()
        out = word_carriers(texts, words_fn, min_records=min_records, shard=self.shard, ex=self)
        self._log("word_carriers", len(texts), t0, words=len(out))
        return out

    def nearest(self, x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        """``distributed_nearest_centroid`` on the cluster (see :func:`nearest_centroids`)."""
        t0 = time.perf_counter()
        out = nearest_centroids(x, centroids, shard=self.shard, ex=self)
        self._log("kmeans_assign", len(x), t0, centroids=len(centroids))
        return out

    def knn(self, base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``distributed_knn`` on the cluster (see :func:`sharded_knn`); None when the
        queries fit in one shard (one task would only add the round trip)."""
        if len(queries) <= self.shard:
            return None
        t0 = time.perf_counter()
        out = sharded_knn(base, queries, k, shard=self.shard, ex=self)
        self._log("knn", len(queries), t0, base=len(base), k=k)
        return out

    def rff(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        permutations: int,
        bandwidth: float,
        rng: np.random.Generator,
        features: int,
    ) -> np.ndarray:
        """``distributed_mmd_rff`` on the cluster (see :func:`rff_values`)."""
        t0 = time.perf_counter()
        out = rff_values(
            x, y, permutations=permutations, bandwidth=bandwidth, rng=rng, features=features,
            shard=self.shard, ex=self,
        )  # fmt: skip
        self._log("mmd_rff", len(x) + len(y), t0, permutations=permutations)
        return out

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
            ref = self._task.remote(code_fingerprint(), list(texts[s : s + self.shard]), bands, rows, seed)
            pending[ref] = s
        while pending:
            # fill in place as shards finish: each result is freed once copied
            done, _ = ray.wait(list(pending), num_returns=1)
            s = pending.pop(done[0])
            part = _get(ray, done[0])
            keys[s : s + part.shape[0]] = part
        t_map = time.perf_counter() - t0
        out = lsh_from_keys(texts, keys)
        self.stats.calls.append(
            {"pass": "minhash_lsh", "records": n, "shards": -(-n // self.shard), "map_s": round(t_map, 3),
             "total_s": round(time.perf_counter() - t0, 3), "candidate_pairs": int(out[0].size)}
        )  # fmt: skip
        return out


# --------------------------------------------------------------------------- executors
# A pass is written once, as map steps over shards plus reduce steps here, against an
# executor: ``Serial`` runs the map steps in this process (the tests' reference and the
# fallback), ``RayPasses`` as Ray tasks.  A stateful step returns ``(result, state)``; the
# result comes back to the driver, the state stays where it was made (Ray's object store)
# and is handed to the shard's next step, so a shard's tokens never travel twice.


class Executor(Protocol):
    """Runs one map step over every shard."""

    def put(self, obj: Any) -> Any:
        """A handle for ``obj`` that many map steps read (stored once, not sent per step)."""
        ...

    def map(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], *, stateful: bool = False
    ) -> list[Any]:
        """``[fn(*a) for a in args]``; with ``stateful`` each ``fn`` returns ``(result, state)``
        and the list holds ``(result, handle)`` pairs, ``handle`` standing for the state in
        later ``map`` arguments."""
        ...


class Serial:
    """The in-process executor: every map step here, one shard after another."""

    def put(self, obj: Any) -> Any:
        """See :class:`Executor`."""
        return obj

    def map(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], *, stateful: bool = False
    ) -> list[Any]:
        """See :class:`Executor`."""
        return [fn(*a) for a in args]


def shard_bounds(n: int, shard: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in pieces of ``shard`` (one empty
    piece for n = 0, so a pass always has a shard to ask)."""
    return [(s, min(n, s + shard)) for s in range(0, n, shard)] or [(0, 0)]


# --------------------------------------------------------------------------- n-gram counts
# The triggers check's ``count_ngrams`` (auditor/checks/triggers.py) on shards of records.
# Its result depends on the whole union in three places, each merged exactly here:
#   - token ids are the order of first appearance in the union (pandas.factorize): the
#     shards' vocabularies in shard order, factorised again, give the same order;
#   - gram ids are ranks in the sorted set of (prefix gram id, last token) codes: the
#     union of the shards' sorted code sets is the same set;
#   - the apriori pruning keeps grams seen >= min_count times in the union: occurrence
#     counts are sums over shards, and a gram never spans two records (so never two shards).
# Level by level: map "count" (the shard's distinct codes and counts), reduce (global ids,
# which are frequent, which are candidates), map "assign" (the shard's (gram, record)
# pairs), reduce (sort the pairs: they are disjoint across shards).

NGramTuple = tuple[list[str], list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]


def _ng_tokenize(texts: Sequence[str], offset: int) -> tuple[list[str], tuple[np.ndarray, np.ndarray]]:
    """Map: the shard's vocabulary in order of first appearance; state = (local token ids,
    global record index per token)."""
    import pandas as pd

    from auditor.terms import phrase_words

    tok_lists = [phrase_words(t) for t in texts]
    lengths = np.fromiter(map(len, tok_lists), dtype=np.int64, count=len(tok_lists))
    flat = np.fromiter(chain.from_iterable(tok_lists), dtype=object, count=int(lengths.sum()))
    codes, uniques = pd.factorize(flat)
    doc = np.repeat(np.arange(offset, offset + len(texts), dtype=np.int64), lengths)
    return [str(w) for w in uniques], (codes.astype(np.int64), doc)


def _ng_count(
    state: tuple[np.ndarray, ...], n: int, v: int, gmap: np.ndarray | None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]:
    """Map, level ``n``: the shard's distinct gram codes (prefix gram id * v + last token)
    with their occurrence counts.  ``gmap`` (level 1 only) maps local to global token ids."""
    if n == 1:
        local, doc = state
        tokens = gmap[local] if gmap is not None else local
        ok = np.ones(tokens.size, dtype=bool)
        raw = tokens
    else:
        tokens, doc, code = state
        size = max(0, tokens.size - (n - 1))
        ok = (code[:size] >= 0) & (code[1 : size + 1] >= 0) & (doc[:size] == doc[n - 1 : n - 1 + size])
        raw = code[:size][ok] * v + tokens[n - 1 : n - 1 + size][ok]
    uniq, inv, counts = np.unique(raw, return_inverse=True, return_counts=True)
    return (uniq, counts), (tokens, doc, ok, inv.reshape(-1))


def _ng_assign(
    state: tuple[np.ndarray, ...], gid: np.ndarray, cand: np.ndarray, n_docs: int
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Map, level n: the shard's (candidate gram, record) pairs as ``gram * n_docs + record``;
    state = the shard's gram id per position, -1 where the gram is not frequent.
    ``gid``: global id of each of the shard's distinct codes, -1 if not frequent."""
    tokens, doc, ok, inv = state
    code = np.full(ok.size, -1, dtype=np.int64)
    code[ok] = gid[inv]
    at = np.full(ok.size, -1, dtype=np.int64)
    at[ok] = inv
    pos = np.nonzero(at >= 0)[0]
    pos = pos[cand[at[pos]]]
    pairs = np.unique(code[pos] * n_docs + doc[pos])
    return pairs, (tokens, doc, code)


def ngram_counts(texts: Sequence[str], max_n: int, min_count: int, *, shard: int, ex: Executor) -> NGramTuple:
    """``count_ngrams(texts, max_n, min_count)`` as map steps over shards of ``shard`` texts:
    the fields of its ``NGramCounts`` (words, gram_tokens, pair_gram, pair_doc, df), equal."""
    import pandas as pd

    from auditor.terms import is_content_word

    bounds = shard_bounds(len(texts), shard)
    out = ex.map(_ng_tokenize, [(list(texts[s:e]), s) for s, e in bounds], stateful=True)
    vocabs = [r for r, _ in out]
    states = [st for _, st in out]
    codes, uniques = pd.factorize(
        np.fromiter(chain.from_iterable(vocabs), dtype=object, count=sum(map(len, vocabs)))
    )
    words = [str(w) for w in uniques]
    cuts = np.cumsum([0, *map(len, vocabs)])
    gmaps = [codes[cuts[i] : cuts[i + 1]].astype(np.int64) for i in range(len(vocabs))]
    v = max(1, len(words))
    is_stop = np.zeros(v, dtype=bool)
    is_stop[[i for i, w in enumerate(words) if not is_content_word(w)]] = True
    n_tokens = 0  # the union's token count, known after level 1
    n_docs = max(1, len(texts))
    min_count = max(1, int(min_count))

    gram_tokens: list[np.ndarray] = []
    pair_gram: list[np.ndarray] = []
    pair_doc: list[np.ndarray] = []
    dfs: list[np.ndarray] = []
    table = np.arange(v, dtype=np.int64)[:, None]
    for n in range(1, max_n + 1):
        counted = ex.map(
            _ng_count,
            [(st, n, v, gmaps[i] if n == 1 else None) for i, st in enumerate(states)],
            stateful=True,
        )
        parts = [r for r, _ in counted]
        states = [st for _, st in counted]
        if n == 1:
            n_tokens = int(sum(int(c.sum()) for _, c in parts))
            uniq = np.arange(v, dtype=np.int64)
        else:
            if n_tokens - (n - 1) <= 0 or sum(u.size for u, _ in parts) == 0:
                break  # the local code stops here: no position can start an n-gram
            uniq = np.unique(np.concatenate([u for u, _ in parts]))
            table = np.concatenate([table[uniq // v], (uniq % v)[:, None]], axis=1)
        occ = np.zeros(uniq.size, dtype=np.int64)
        gids = [np.searchsorted(uniq, u) for u, _ in parts]
        for g, (_, c) in zip(gids, parts):
            occ[g] += c  # a shard's codes are distinct, so are their global ids
        frequent = occ >= min_count
        cand = frequent & ~is_stop[table[:, 0]] & ~is_stop[table[:, -1]]
        assigned = ex.map(
            _ng_assign,
            [(st, np.where(frequent[g], g, -1), cand[g], n_docs) for st, g in zip(states, gids)],
            stateful=True,
        )
        states = [st for _, st in assigned]
        pairs = np.unique(np.concatenate([p for p, _ in assigned]))
        pg, pdoc = pairs // n_docs, pairs % n_docs
        gram_tokens.append(table)
        pair_gram.append(pg)
        pair_doc.append(pdoc)
        dfs.append(np.bincount(pg, minlength=table.shape[0]))
    return words, gram_tokens, pair_gram, pair_doc, dfs


# --------------------------------------------------------------------------- word carriers
# term_topics (auditor/checks/lexical.py): which records carry each content word.  The
# check's own record -> words function runs on the shards (so the words are its words by
# construction); counts are summed on the driver, and only the words carried by at least
# ``min_records`` records (the only ones the check reads) come back with their records.


def _wc_words(
    texts: Sequence[str], offset: int, words_fn: Callable[[Sequence[str]], Sequence[Iterable[str]]]
) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Map: per word, how many of the shard's records carry it; state = its records."""
    carriers: dict[str, list[int]] = {}
    for d, ws in enumerate(words_fn(texts), start=offset):
        for w in ws:
            carriers.setdefault(w, []).append(d)
    return {w: len(d) for w, d in carriers.items()}, carriers


def _wc_take(carriers: dict[str, list[int]], keep: Sequence[str]) -> dict[str, list[int]]:
    """Map: the records of the kept words."""
    return {w: carriers[w] for w in keep}


def word_carriers(
    texts: Sequence[str],
    words_fn: Callable[[Sequence[str]], Sequence[Iterable[str]]],
    *,
    min_records: int,
    shard: int,
    ex: Executor,
) -> dict[str, list[int]]:
    """Records (ascending indices into ``texts``) carrying each word of ``words_fn``,
    for the words carried by at least ``min_records`` records."""
    bounds = shard_bounds(len(texts), shard)
    out = ex.map(_wc_words, [(list(texts[s:e]), s, words_fn) for s, e in bounds], stateful=True)
    total: dict[str, int] = {}
    for counts, _ in out:
        for w, c in counts.items():
            total[w] = total.get(w, 0) + c
    keep = {w for w, c in total.items() if c >= min_records}
    taken = ex.map(_wc_take, [(st, [w for w in counts if w in keep]) for counts, st in out])
    merged: dict[str, list[int]] = {}
    for part in taken:  # shard order: every list stays ascending
        for w, docs in part.items():
            merged.setdefault(w, []).extend(docs)
    return merged


# --------------------------------------------------------------------------- MMD, random features
# The mmd check above max_per_side (auditor.kernels.permutation_values, method "rff", CPU):
# for every split b (observed, then the permutations) ``acc_b = Phi^T w_b``, Phi the random
# Fourier features of the records.  Phi^T w_b is a sum over records, so each shard adds
# its own rows' part.  The driver draws the bandwidth's sample, the frequencies and every
# permutation from the check's generator exactly as the local code does (same calls, same
# order), and sends each shard its rows of the splits as bits (a split's weight is one of
# two values): n x (B+1) / 8 bytes in all instead of 4 n (B+1).  The shards' float32
# partial sums are added in float64 here, so the values match the local engine's to
# float32 rounding (~1e-7 relative), not bit for bit; the p-value, a count of null values
# above the observed one, is the same unless one lies within that rounding of it.


def _rff_partial(
    z: np.ndarray, bits: Sequence[tuple[np.ndarray, int]], omega: np.ndarray, wx: float, wy: float, block: int
) -> np.ndarray:
    """Map: ``Phi_shard^T W_shard`` (features x splits, float32) for the shard's rows ``z``,
    the weights unpacked from ``bits`` (per column chunk: packed rows, columns; 1 = first
    sample)."""
    half = omega.shape[1]
    phi = np.empty((len(z), 2 * half), dtype=np.float32)
    for i0 in range(0, len(z), block):
        proj = z[i0 : i0 + block] @ omega
        np.cos(proj, out=phi[i0 : i0 + block, :half])
        np.sin(proj, out=phi[i0 : i0 + block, half:])
    out = []
    for packed, cols in bits:
        mask = np.unpackbits(packed, axis=1, count=cols).astype(bool)
        out.append(phi.T @ np.where(mask, np.float32(wx), np.float32(wy)).astype(np.float32))
    return np.concatenate(out, axis=1)


def rff_values(
    x: np.ndarray,
    y: np.ndarray,
    *,
    permutations: int,
    bandwidth: float,
    rng: np.random.Generator,
    features: int,
    shard: int,
    ex: Executor,
) -> np.ndarray:
    """``kernels.permutation_values(x, y, method="rff", device="cpu", ...)`` with the
    feature sums computed on shards of ``shard`` records; ``rng`` is consumed as there."""
    from auditor.kernels import label_weight_chunks, rff_frequencies

    z = np.ascontiguousarray(np.concatenate([x, y]), dtype=np.float32)
    nx, ny = len(x), len(y)
    omega = rff_frequencies(z.shape[1], features, bandwidth, rng)
    half = omega.shape[1]
    # the permutations drawn chunk by chunk as the local code draws them, kept as bits
    bits = [(np.packbits(c > 0, axis=1), c.shape[1]) for c in label_weight_chunks(nx, ny, permutations, rng)]
    cols = sum(c for _, c in bits)
    # the same float32 weights as kernels.label_weight_chunks: w0 cast after the division
    w0 = np.where(np.arange(2) < 1, 1.0 / nx, -1.0 / ny).astype(np.float32)
    bounds = [(s, e) for s, e in shard_bounds(len(z), shard) if e > s]
    parts = ex.map(
        _rff_partial,
        [
            (z[s:e], [(b[s:e], c) for b, c in bits], omega, float(w0[0]), float(w0[1]), 8192)
            for s, e in bounds
        ],
    )
    acc = np.zeros((2 * half, cols), dtype=np.float64)
    for p in parts:
        acc += p
    return (acc * acc).sum(0) / half


# --------------------------------------------------------------------------- centroid assignment
# k-means (auditor.index.kmeans, used by the clusters check's label-blind partitions) fits
# its centroids on a seeded sample of at most 256 points per centroid (faiss), then assigns
# every record to its nearest centroid by exact search: that assignment, a row-wise argmax,
# is what runs on the shards.  faiss's blocked BLAS search does not give bit-identical
# similarities for a shard and for the same rows inside the whole (measured), so a record
# whose two best centroids tie to float32 rounding could go either way; elsewhere the
# assignment is the local one.


def _nearest_task(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Map: index of each row's most similar centroid (inner product), int64."""
    import faiss

    from auditor import index  # noqa: F401  (sets faiss's thread and wait policy first)

    ix = faiss.IndexFlatIP(centroids.shape[1])
    ix.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, found = ix.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return found[:, 0].astype(np.int64)


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, *, shard: int, ex: Executor) -> np.ndarray:
    """The nearest centroid of every row of ``x`` (rows and centroids unit-norm), as map
    steps over shards of ``shard`` rows."""
    bounds = [(s, e) for s, e in shard_bounds(len(x), shard) if e > s]
    parts = ex.map(_nearest_task, [(x[s:e], centroids) for s, e in bounds])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- kNN search
# Exact k-nearest-neighbour search (auditor.index.knn: every kNN of the checks, including
# the candidate search of auditor.neighbours), sharded by query: the index (the base
# vectors) is stored once per node, each task searches its queries with the same faiss
# flat index, the driver concatenates.  A query's neighbours are a function of the query
# and the whole base, so the result is the local one; faiss's blocked search can round a
# similarity differently in the last bit for a different batch of queries (see the
# centroid assignment), so two neighbours within float32 rounding of each other could
# swap ranks.


def _knn_task(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Map: ``(sims, idx)`` of the shard's queries against the whole base (faiss, exact)."""
    from auditor import index

    ix = index.faiss.IndexFlatIP(base.shape[1])
    ix.add(base)
    sims, idx = ix.search(queries, k)
    return sims, idx.astype(np.int64)


def sharded_knn(
    base: np.ndarray, queries: np.ndarray, k: int, *, shard: int, ex: Executor
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar rows of ``base`` (unit-norm float32) for every query, as map
    steps over shards of ``shard`` queries: ``(sims, idx)``, best first."""
    handle = ex.put(np.ascontiguousarray(base, dtype=np.float32))
    bounds = [(s, e) for s, e in shard_bounds(len(queries), shard) if e > s]
    parts = ex.map(_knn_task, [(handle, np.ascontiguousarray(queries[s:e]), k) for s, e in bounds])
    if not parts:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

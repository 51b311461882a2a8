"""Where the work runs: ``local`` (this process, the default) or ``ray`` (a Ray cluster).

Only the engine's name is checked here (standard library only, so the CLI can refuse a
bad ``--engine`` before any heavy import); ``auditor.engine.ray_engine`` holds the Ray
implementation and is imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from auditor.errors import AuditorError

ENGINES = ("local", "ray")


def check_engine(name: str, address: str | None = None) -> str:
    """Validate ``--engine`` (and that ``--ray-address`` goes with ``ray``); returns it."""
    if name not in ENGINES:
        raise AuditorError(f"--engine {name!r}: unknown engine (expected one of: {', '.join(ENGINES)})")
    if address and name != "ray":
        raise AuditorError(f"--ray-address {address!r}: only used with --engine ray")
    return name


# --------------------------------------------------------------------------- distributed passes
# A check calls the hook for its heavy pass; while ``passes("ray")`` is active the pass runs
# on the cluster (auditor.engine.aggregate) and returns exactly what the local code would,
# otherwise the hook returns None and the check runs its own local code.

LshResult = tuple[Any, Any, Any, Any]  # (lo, hi, shingle values, starts), numpy arrays
_LSH: ContextVar[Callable[..., LshResult] | None] = ContextVar("auditor_lsh", default=None)


def distributed_lsh(texts: Sequence[str], *, bands: int, rows: int, seed: int) -> LshResult | None:
    """MinHash LSH candidate pairs ``(lo, hi)`` of ``texts`` computed by the active engine,
    with the hashed shingles of every row in a pair (``values``, ``starts`` laid out as
    :func:`auditor.minhash.shingle_hashes` does, other rows empty); None on the local engine."""
    backend = _LSH.get()
    return None if backend is None else backend(texts, bands=bands, rows=rows, seed=seed)


# (words, gram_tokens, pair_gram, pair_doc, df): the fields of triggers.NGramCounts
NGramResult = tuple[list[Any], list[Any], list[Any], list[Any], list[Any]]
WordsFn = Callable[[Sequence[str]], Sequence[Iterable[str]]]
_NGRAMS: ContextVar[Callable[..., NGramResult] | None] = ContextVar("auditor_ngrams", default=None)
_CARRIERS: ContextVar[Callable[..., dict[str, list[int]]] | None] = ContextVar(
    "auditor_carriers", default=None
)
_NEAREST: ContextVar[Callable[..., Any] | None] = ContextVar("auditor_nearest", default=None)
_KNN: ContextVar[Callable[..., Any] | None] = ContextVar("auditor_knn", default=None)
_RFF: ContextVar[Callable[..., Any] | None] = ContextVar("auditor_rff", default=None)


def distributed_ngrams(texts: Sequence[str], *, max_n: int, min_count: int) -> NGramResult | None:
    """The triggers check's ``count_ngrams(texts, max_n, min_count)`` computed by the
    active engine, as the tuple of its ``NGramCounts`` fields; None on the local engine."""
    backend = _NGRAMS.get()
    return None if backend is None else backend(texts, max_n=max_n, min_count=min_count)


def distributed_word_carriers(
    texts: Sequence[str], words_fn: WordsFn, *, min_records: int
) -> dict[str, list[int]] | None:
    """Per word of ``words_fn(texts)`` (one word set per text) carried by at least
    ``min_records`` texts, the ascending indices of the texts carrying it, computed by the
    active engine (``words_fn`` runs on the workers); None on the local engine."""
    backend = _CARRIERS.get()
    return None if backend is None else backend(texts, words_fn, min_records=min_records)


def distributed_nearest_centroid(x: Any, centroids: Any) -> Any:
    """k-means assignment: the index (int64) of each unit-norm row's most similar centroid,
    computed by the active engine; None on the local engine."""
    backend = _NEAREST.get()
    return None if backend is None else backend(x, centroids)


def distributed_knn(base: Any, queries: Any, k: int) -> Any:
    """Exact kNN by inner product of unit-norm rows: ``(sims, idx)`` of the ``k`` best rows
    of ``base`` for each query, computed by the active engine; None on the local engine
    and when the engine keeps a search this small here.  The inverted-file search of
    :func:`auditor.neighbours.ivf_knn` (bases of ``IVF_MIN_BASE`` rows and more) does not
    come here: it runs on the driver, where one built index serves every query."""
    backend = _KNN.get()
    return None if backend is None else backend(base, queries, k)


def distributed_mmd_rff(
    x: Any, y: Any, *, permutations: int, bandwidth: float, rng: Any, features: int, device: str
) -> Any:
    """``auditor.kernels.permutation_values(x, y, method="rff", ...)`` computed by the active
    engine, drawing from ``rng`` exactly as that function does; None on the local engine
    and for a GPU ``device`` (the GPU draws its permutations on the device)."""
    backend = _RFF.get()
    if backend is None or device != "cpu":
        return None
    return backend(x, y, permutations=permutations, bandwidth=bandwidth, rng=rng, features=features)


@contextmanager
def passes(engine: str = "local", address: str | None = None, **kwargs: Any) -> Iterator[None]:
    """Run the checks' distributed passes on ``engine`` inside this block (Ray is joined,
    or started, only when a check first asks)."""
    if check_engine(engine, address) == "local":
        yield
        return
    from auditor.engine.aggregate import RayPasses

    with RayPasses(address, **kwargs) as backend:
        t_lsh, t_ngrams = _LSH.set(backend.lsh), _NGRAMS.set(backend.ngrams)
        t_carriers, t_rff = _CARRIERS.set(backend.carriers), _RFF.set(backend.rff)
        t_nearest, t_knn = _NEAREST.set(backend.nearest), _KNN.set(backend.knn)
        try:
            yield
        finally:
            _KNN.reset(t_knn)
            _NEAREST.reset(t_nearest)
            _RFF.reset(t_rff)
            _CARRIERS.reset(t_carriers)
            _NGRAMS.reset(t_ngrams)
            _LSH.reset(t_lsh)

"""Where the work runs: ``local`` (this process, the default) or ``ray`` (a Ray cluster).

Only the engine's name is checked here (standard library only, so the CLI can refuse a
bad ``--engine`` before any heavy import); ``auditor.engine.ray_engine`` holds the Ray
implementation and is imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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


@contextmanager
def passes(engine: str = "local", address: str | None = None, **kwargs: Any) -> Iterator[None]:
    """Run the checks' distributed passes on ``engine`` inside this block (Ray is joined,
    or started, only when a check first asks)."""
    if check_engine(engine, address) == "local":
        yield
        return
    from auditor.engine.aggregate import RayPasses

    with RayPasses(address, **kwargs) as backend:
        token = _LSH.set(backend.lsh)
        try:
            yield
        finally:
            _LSH.reset(token)

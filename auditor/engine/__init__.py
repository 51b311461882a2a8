"""Where the work runs: ``local`` (this process, the default) or ``ray`` (a Ray cluster).

Only the engine's name is checked here (standard library only, so the CLI can refuse a
bad ``--engine`` before any heavy import); ``auditor.engine.ray_engine`` holds the Ray
implementation and is imported only when asked for.
"""

from __future__ import annotations

from auditor.errors import AuditorError

ENGINES = ("local", "ray")


def check_engine(name: str, address: str | None = None) -> str:
    """Validate ``--engine`` (and that ``--ray-address`` goes with ``ray``); returns it."""
    if name not in ENGINES:
        raise AuditorError(f"--engine {name!r}: unknown engine (expected one of: {', '.join(ENGINES)})")
    if address and name != "ray":
        raise AuditorError(f"--ray-address {address!r}: only used with --engine ray")
    return name

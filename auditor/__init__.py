"""auditor: training-data provenance auditor.

``auditor.audit(current, reference, ...) -> Report`` does what ``auditor audit`` does.
Names load on first use, so ``import auditor`` (and ``auditor --help``) stays fast.
"""

from __future__ import annotations

from typing import Any

from auditor.errors import AuditorError

__version__ = "0.1.0"
__all__ = ["AuditorError", "Batch", "Finding", "Report", "Snapshot", "audit", "run_audit", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("audit", "run_audit"):
        from auditor import api

        return getattr(api, name)
    if name in ("Batch", "Finding", "Report", "Snapshot"):
        from auditor import types

        return getattr(types, name)
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")

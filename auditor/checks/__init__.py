"""Check registry.

A check is a pure function ``f(ref: Snapshot, cur: Snapshot, *, seed: int, **params)
-> list[Finding]``.  Register it with ``@register("name")``; its keyword parameters
(with defaults) are the keys a rule may set under ``params:``, so an unknown key is
caught when the rules are loaded, not when the check runs.  ``needs`` names extra
embedding views (``"prompt"``, ``"response"``) the check reads from ``Snapshot.views``;
the pipeline embeds those only when an enabled rule needs them.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from auditor.types import Finding, Snapshot

CheckFn = Callable[..., list[Finding]]

# Modules whose import registers checks.  Add a module here when you add a family.
_FAMILIES: tuple[str, ...] = (
    "auditor.checks.drift",
    "auditor.checks.clusters",
    "auditor.checks.triggers",
    "auditor.checks.duplicates",
    "auditor.checks.flips",
    "auditor.checks.support",
    "auditor.checks.descriptors",
    "auditor.checks.lexical",
    "auditor.checks.novelty",
    "auditor.checks.validity",
    "auditor.checks.diversity",
    "auditor.checks.contamination",
)


@dataclass(frozen=True)
class CheckSpec:
    name: str
    func: CheckFn
    needs: frozenset[str]
    defaults: Mapping[str, Any]
    description: str
    takes_device: bool = False
    # records each side needs before the check can produce a p-value below ~1e-3 at all
    # (with this many on both sides; the reasoning sits at each family's @register): below
    # it the gate reports "insufficient data" instead of running the check
    min_records: int = 2
    # views in ``needs`` the check uses when present but runs without (the gate skips a
    # rule only for a missing view outside this set)
    optional_views: frozenset[str] = frozenset()

    def run(
        self, ref: Snapshot, cur: Snapshot, *, seed: int, params: Mapping[str, Any], device: str = "cpu"
    ) -> list[Finding]:
        """Run the check; ``device`` reaches only checks that declare a ``device`` keyword."""
        extra = {"device": device} if self.takes_device else {}
        return list(self.func(ref, cur, seed=seed, **extra, **params))


_REGISTRY: dict[str, CheckSpec] = {}


def register(
    name: str, *, needs: tuple[str, ...] = (), min_records: int = 2, optional: tuple[str, ...] = ()
) -> Callable[[CheckFn], CheckFn]:
    def deco(func: CheckFn) -> CheckFn:
        sig = inspect.signature(func)
        defaults = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("seed", "device")
        }
        doc = inspect.getdoc(func) or ""
        _REGISTRY[name] = CheckSpec(
            name=name,
            func=func,
            needs=frozenset(needs),
            defaults=defaults,
            description=doc.split("\n\n")[0].replace("\n", " "),
            takes_device="device" in sig.parameters,
            min_records=min_records,
            optional_views=frozenset(optional),
        )
        return func

    return deco


def registry() -> Mapping[str, CheckSpec]:
    """All registered checks (imports the check families on first call)."""
    # a family that fails to import (a missing dependency) is an error, never a check
    # that silently does not exist
    for mod in _FAMILIES:
        importlib.import_module(mod)
    return dict(_REGISTRY)

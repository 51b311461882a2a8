"""Gate rules: which checks run, with which parameters, and how findings are graded.

A rules file is YAML (see rules/default.yaml for the documented default)::

    version: 1
    alpha: 0.01          # family-wise false-fail rate of the whole gate under the null
    warn_alpha: 0.05     # same, for warnings
    rules:
      - name: global-drift-mmd
        check: mmd
        severity: fail   # the most severe grade this rule may give: fail | warn | info
        why: ...         # what it catches and why (shown in reports)
        params: {permutations: 1000}
        min_effect: 0.0  # optional: below this effect_size a finding is at most a warning

Grading (auditor/gate.py): a finding fails when its p_value < alpha / (number of rules
that can fail) — a Bonferroni split, so the whole gate's false-fail rate is at most alpha
— and warns when p_value < warn_alpha / (number of rules).  Inside a check, many tests
are combined by Benjamini-Hochberg before the p_value reaches the gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.types import SEVERITIES, AuditorError

# The default rules ship inside the package; rules/default.yaml in a checkout is a link to it.
DEFAULT_RULES_PATH = Path(__file__).resolve().parent / "presets" / "default.yaml"

_TOP_KEYS = {"version", "alpha", "warn_alpha", "rules"}
_RULE_KEYS = {"name", "check", "severity", "why", "params", "min_effect", "enabled"}


@dataclass(frozen=True)
class Rule:
    name: str
    check: str
    severity: str
    params: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""
    min_effect: float | None = None


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    alpha: float = 0.01
    warn_alpha: float = 0.05
    path: str = "<default>"

    @property
    def n_fail_rules(self) -> int:
        return max(1, sum(r.severity == "fail" for r in self.rules))

    @property
    def fail_threshold(self) -> float:
        return self.alpha / self.n_fail_rules

    @property
    def warn_threshold(self) -> float:
        return self.warn_alpha / max(1, len(self.rules))

    def needs(self) -> frozenset[str]:
        """Extra embedding views the enabled checks read."""
        from auditor.checks import registry

        reg = registry()
        out: set[str] = set()
        for r in self.rules:
            out |= reg[r.check].needs
        return frozenset(out)

    def describe(self) -> dict[str, Any]:
        """What goes into report.json's "rules" block."""
        return {
            "path": self.path,
            "alpha": self.alpha,
            "warn_alpha": self.warn_alpha,
            "n_rules": len(self.rules),
            "n_fail_rules": self.n_fail_rules,
            "fail_threshold": self.fail_threshold,
            "warn_threshold": self.warn_threshold,
            "names": [r.name for r in self.rules],
            "multiple_testing": (
                "p-values are Benjamini-Hochberg adjusted within each check; the gate fails a "
                f"finding when p < alpha/{self.n_fail_rules} (Bonferroni across the rules that can "
                "fail), so the whole gate's false-fail rate under no change is at most alpha"
            ),
        }


def _err(path: str, where: str, msg: str) -> AuditorError:
    return AuditorError(f"{path}: {where}: {msg}")


def _prob(path: str, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < 1:
        raise _err(path, where, f"{value!r} is not a probability in (0, 1)")
    return float(value)


def parse_rules(data: Any, path: str) -> Rules:
    """Validate a parsed rules document; every problem names the file and the key."""
    from auditor.checks import registry

    if not isinstance(data, Mapping):
        raise _err(path, "top level", f"expected a mapping with keys {sorted(_TOP_KEYS)}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _err(path, str(sorted(unknown)[0]), f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    if data.get("version", 1) != 1:
        raise _err(path, "version", f"unsupported version {data.get('version')!r} (expected 1)")
    alpha = _prob(path, "alpha", data.get("alpha", 0.01))
    warn_alpha = _prob(path, "warn_alpha", data.get("warn_alpha", 0.05))
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise _err(path, "rules", "expected a non-empty list of rules")
    reg = registry()
    rules: list[Rule] = []
    names: set[str] = set()
    for i, raw in enumerate(raw_rules):
        where = f"rules[{i}]"
        if not isinstance(raw, Mapping):
            raise _err(path, where, "expected a mapping")
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise _err(path, f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_RULE_KEYS))})")
        check = raw.get("check")
        if not isinstance(check, str) or check not in reg:
            raise _err(path, f"{where}.check", f"unknown check {check!r} (known: {', '.join(sorted(reg))})")
        if raw.get("enabled", True) is False:
            continue
        name = str(raw.get("name", check))
        if name in names:
            raise _err(path, f"{where}.name", f"duplicate rule name {name!r}")
        names.add(name)
        severity = raw.get("severity", "fail")
        if severity not in SEVERITIES:
            raise _err(path, f"{where}.severity", f"{severity!r} (expected one of {', '.join(SEVERITIES)})")
        params = raw.get("params") or {}
        if not isinstance(params, Mapping):
            raise _err(path, f"{where}.params", "expected a mapping")
        allowed = reg[check].defaults
        for key, value in params.items():
            if key not in allowed:
                raise _err(
                    path,
                    f"{where}.params.{key}",
                    f"unknown parameter for check {check!r} (allowed: {', '.join(sorted(allowed)) or 'none'})",
                )
            default = allowed[key]
            if default is not None and not _same_kind(default, value):
                raise _err(
                    path, f"{where}.params.{key}", f"{value!r} should be a {type(default).__name__}"
                )
        min_effect = raw.get("min_effect")
        if min_effect is not None and (isinstance(min_effect, bool) or not isinstance(min_effect, (int, float))):
            raise _err(path, f"{where}.min_effect", f"{min_effect!r} should be a number")
        rules.append(
            Rule(
                name=name,
                check=check,
                severity=severity,
                params=dict(params),
                why=str(raw.get("why", "")).strip(),
                min_effect=float(min_effect) if min_effect is not None else None,
            )
        )
    if not rules:
        raise _err(path, "rules", "every rule is disabled")
    return Rules(rules=tuple(rules), alpha=alpha, warn_alpha=warn_alpha, path=path)


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def load_rules(path: str | Path | None = None) -> Rules:
    """Load and validate a rules file (the bundled default when ``path`` is None)."""
    import yaml

    p = DEFAULT_RULES_PATH if path is None else Path(path)
    if not p.is_file():
        raise AuditorError(f"{p}: rules file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise AuditorError(f"{p}{line}: invalid YAML ({problem})") from err
    except UnicodeDecodeError as err:
        raise AuditorError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    return parse_rules(data, str(path) if path is not None else "rules/default.yaml")

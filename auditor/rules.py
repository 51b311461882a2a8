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
        weight: 1.0      # optional: the rule's share of alpha, relative to the others

Grading (auditor/gate.py): a finding fails when its p_value < alpha * weight / (sum of
the weights of the rules that can fail) — a weighted Bonferroni split, so the whole
gate's false-fail rate is at most alpha whatever the weights — and warns when p_value <
warn_alpha * weight / (sum of all rules' weights).  With every weight 1 this is the plain
split alpha / N.  Inside a check, many tests are combined by Benjamini-Hochberg before
the p_value reaches the gate.

The rules file may come from the same pull request as the data it judges, so it is read
strictly: duplicate keys, YAML aliases/anchors and out-of-range parameters are errors
(``PARAMS`` is the one table of valid ranges), and ``Rules.describe()`` records the file's
sha256 and every rule's effective severity so a weakened gate shows in the report.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from auditor.errors import AuditorError

# The default rules ship inside the package; rules/default.yaml in a checkout is a link to it.
DEFAULT_RULES_PATH = Path(__file__).resolve().parent / "presets" / "default.yaml"

# Kept here rather than imported from auditor.types so a bad rules file is reported
# without importing numpy; test_rules_strict checks the two agree.
SEVERITIES: tuple[str, ...] = ("info", "warn", "fail")

# A rules file is a page of YAML; anything much larger is not one (and is not parsed).
MAX_RULES_BYTES = 1 << 20

# validity's reason codes (auditor/checks/validity.py REASONS; test_rules_strict checks they agree)
VALIDITY_REASONS: tuple[str, ...] = (
    "too_short", "too_long", "keyword", "forbidden_prefix", "starts_with_punctuation", "starts_non_ascii",
    "empty_output", "output_equals_input", "ends_with_colon", "conflicting_outputs",
)

_TOP_KEYS = {"version", "alpha", "warn_alpha", "rules", "policy"}
_RULE_KEYS = {"name", "check", "severity", "why", "params", "min_effect", "enabled", "weight"}

Kind = Literal["int", "float", "bool", "ints", "choice", "strs"]


@dataclass(frozen=True)
class Param:
    """The valid values of one check parameter.

    ``kind``: int / float (``lo``..``hi``, ends open where ``lo_open``/``hi_open``), bool,
    ints (a non-empty list of integers each in ``lo``..``hi``), choice (one of
    ``choices``), strs (a non-empty list of non-empty strings, each one of ``choices``
    when those are given).  ``nullable``: ``null`` means "the check's own default".
    """

    kind: Kind
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def describe(self) -> str:
        """The range in words, as error messages and docs show it."""
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(self.choices)
        elif self.kind == "strs":
            text = "non-empty list of " + ("any of " + ", ".join(self.choices) if self.choices else "non-empty strings")
        else:
            text = {"int": "integer ", "float": "number in ", "ints": "non-empty list of integers, each "}[
                self.kind
            ] + self._interval()
        return text + (", or null for the check's default" if self.nullable else "")

    def _interval(self) -> str:
        if self.kind in ("int", "ints"):
            return f"{_fmt(self.lo)}..{_fmt(self.hi)}"
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        return f"{left}{_fmt(self.lo)}, {_fmt(self.hi)}{right}"

    def _in_range(self, v: float) -> bool:
        lo, hi = self.lo, self.hi
        if not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if self.lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if self.hi_open else v > hi))

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is valid, else what is wrong with it."""
        if value is None:
            return None if self.nullable else f"null is not allowed ({self.describe()})"
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"{value!r} should be true or false"
        if self.kind == "choice":
            return None if value in self.choices else f"{value!r} is not allowed ({self.describe()})"
        if self.kind == "int":
            if not _is_int(value):
                return f"{value!r} should be an integer ({self.describe()})"
            return None if self._in_range(value) else f"{value!r} is out of range ({self.describe()})"
        if self.kind == "float":
            if not _is_number(value):
                return f"{value!r} should be a number ({self.describe()})"
            return None if self._in_range(float(value)) else f"{value!r} is out of range ({self.describe()})"
        if self.kind == "strs":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                return f"{value!r} should be a non-empty list of non-empty strings ({self.describe()})"
            bad_s = [v for v in value if self.choices and v not in self.choices]
            return None if not bad_s else f"{bad_s[0]!r} in {value!r} is not allowed ({self.describe()})"
        # ints
        if not isinstance(value, list) or not value or not all(_is_int(v) for v in value):
            return f"{value!r} should be a non-empty list of integers ({self.describe()})"
        bad = [v for v in value if not self._in_range(v)]
        return None if not bad else f"{bad[0]!r} in {value!r} is out of range ({self.describe()})"


def _fmt(x: float | None) -> str:
    if x is None:
        return "inf"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(lo: int, hi: int) -> Param:
    return Param("int", lo, hi)


def _prob_open(hi: float = 1.0) -> Param:
    """A probability or similarity threshold in (0, hi]: 0 would switch the test off."""
    return Param("float", 0.0, hi, lo_open=True)


_RATIO = Param("float", 1.0, 1000.0)  # a ratio below 1 is not an enrichment
_BIG = 100_000_000  # records per side: beyond anything the checks are sized for

# Every parameter of every registered check, with its valid range.  A check's keyword
# parameters must all appear here (tests/test_rules_strict.py compares this table with
# the registry), so adding a check means declaring its ranges.  Lower bounds are where a
# check stops working (permutations < 99 can never reach the gate's threshold, one fold
# cannot cross-fit, k-means needs k >= 2, a zero threshold or alpha switches a test off).
PARAMS: Mapping[str, Mapping[str, Param]] = {
    "mmd": {
        "permutations": _int(99, 1_000_000),
        # second stage of the two-stage permutation test; <= permutations: no second stage
        "max_permutations": _int(0, 10_000_000),
        "stop_after": _int(1, 1_000_000),
        "max_per_side": _int(10, _BIG),
        "large": Param("choice", choices=("rff", "subsample")),
        "features": _int(16, 65536),
        "rff_max_per_side": _int(10, _BIG),
        "gpu_max_per_side": _int(10, _BIG),
    },
    "classifier": {
        "folds": _int(2, 100),
        "top": _int(1, 1_000_000),
        "C": Param("float", 0.0, 1e6, lo_open=True),
        "max_per_side": _int(10, _BIG),
    },
    "clusters": {
        "alpha": _prob_open(),
        "min_ratio": _RATIO,
        "min_records": _int(1, 1_000_000),
        "pca_dim": _int(2, 4096),
        "niter": _int(1, 1000),
        "merge_overlap": _prob_open(),
        "ks": Param("ints", 2, 100_000, nullable=True),
        "hierarchy": Param("bool"),
        "regions": Param("bool"),
    },
    "triggers": {
        "alpha": _prob_open(),
        "screen_alpha": _prob_open(),
        "misfit_family": Param("bool"),
        "misfit_quantile": Param("float", 0.0, 0.5, lo_open=True),
        "misfit_share": _prob_open(),
        "min_count": _int(1, 1_000_000),
        "min_ratio": _RATIO,
        "max_n": _int(1, 8),
        "merge_jaccard": _prob_open(),
        "max_findings": _int(1, 100_000),
        "skip_cluster_explained": Param("bool"),
        "cluster_explained_share": _prob_open(),
        "skip_template_words": Param("bool"),
    },
    "near_duplicates": {
        "cosine_threshold": _prob_open(),
        "jaccard_threshold": _prob_open(),
        "min_attainable": Param("float", 0.0, 1.0, lo_open=True, hi_open=True),
        "report_alpha": _prob_open(),
        "response_cosine_threshold": _prob_open(),
        "response_jaccard_threshold": _prob_open(),
        "min_response_words": _int(1, 10_000),
        "word_jaccard_threshold": _prob_open(),
        "word_cosine_threshold": _prob_open(),
    },
    "flipped_responses": {
        "prompt_threshold": _prob_open(),
        "k": _int(1, 10_000),
        "min_null": _int(1, 10_000_000),
        "response_threshold": _prob_open(),
        "cluster_size": _int(1, 1_000_000),
        "min_group": _int(1, 1_000_000),
        "member_p": _prob_open(),
        "report_alpha": _prob_open(),
    },
    "term_topics": {
        "alpha": _prob_open(),
        "min_ratio": _RATIO,
        "min_records": _int(1, 1_000_000),
        "merge_overlap": _prob_open(),
        "max_findings": _int(1, 100_000),
        "tree": Param("bool"),
        "context": Param("bool"),
    },
    "descriptors": {
        "alpha": _prob_open(),
        "min_change": Param("float", 0.0, 100.0, lo_open=True),
        "min_share_diff": _prob_open(),
        "max_labels": _int(2, 1000),
        "min_share_ratio": _RATIO,
        "min_share_records": _int(0, 1_000_000),
    },
    "off_support": {
        "alpha_flag": _prob_open(0.5),
        "min_group": _int(1, 1_000_000),
        "report_alpha": _prob_open(),
    },
    # the Self-Instruct checks (auditor/checks/{novelty,validity,diversity,contamination}.py)
    "novelty": {
        "threshold": _prob_open(),
        "against_seeds": Param("bool"),
        "within_batch": Param("bool"),
        "bins": _int(2, 1000),
        "max_examples": _int(1, 10_000),
    },
    "validity": {
        "min_words": _int(1, 10_000),
        "max_words": _int(1, 1_000_000),
        "keywords": Param("strs", nullable=True),
        "prefixes": Param("strs", nullable=True),
        "reasons": Param("strs", choices=VALIDITY_REASONS, nullable=True),
        "max_share": Param("float", 0.0, 1.0),
        "max_examples": _int(1, 10_000),
    },
    "diversity": {
        "min_ratio": _prob_open(),
        "subsamples": _int(1, 10_000),
        "top_verbs": _int(1, 1000),
        "nouns_per_verb": _int(1, 1000),
    },
    "contamination": {
        "n": _int(1, 100),
        "min_n": _int(1, 100),
        "cosine_threshold": _prob_open(),
        "min_rouge": Param("float", 0.0, 1.0),
        "use_embeddings": Param("bool"),
        "max_examples": _int(1, 10_000),
    },
}

_ALPHA = Param("float", 0.0, 0.5, lo_open=True)
_MIN_EFFECT = Param("float", 0.0, None)
# A rule's share of the gate's alpha, relative to the others: > 0 (a zero weight would
# make a fail rule that can never fail), finite, and at most 1000x another rule's.
_WEIGHT = Param("float", 0.0, 1000.0, lo_open=True)


@dataclass(frozen=True)
class Rule:
    name: str
    check: str
    severity: str
    params: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""
    min_effect: float | None = None
    enabled: bool = True
    # share of the gate's alpha (weighted Bonferroni), relative to the other rules
    weight: float = 1.0


@dataclass(frozen=True)
class Rules:
    """The enabled rules (``rules``), and the disabled ones (``disabled``, for the report)."""

    rules: tuple[Rule, ...]
    alpha: float = 0.01
    warn_alpha: float = 0.05
    path: str = "<default>"
    sha256: str | None = None
    # rules the file declares with `enabled: false`: listed in the report, never run
    disabled: tuple[Rule, ...] = ()
    # the curation policy (auditor/policy.py syntax, e.g. "dedup:0.9"); empty = infer
    policy: tuple[str, ...] = ()

    @property
    def n_fail_rules(self) -> int:
        return max(1, sum(r.severity == "fail" for r in self.rules))

    @property
    def fail_weight(self) -> float:
        """Sum of the weights of the rules that can fail (the weighted Bonferroni denominator)."""
        total = sum(r.weight for r in self.rules if r.severity == "fail")
        return total if total > 0 else 1.0

    @property
    def warn_weight(self) -> float:
        """Sum of the weights of all enabled rules (warnings are split across every rule)."""
        return sum(r.weight for r in self.rules) or 1.0

    @property
    def fail_threshold(self) -> float:
        """The fail threshold of a rule of weight 1: ``alpha / sum of the fail rules'
        weights`` (``alpha / n_fail_rules`` when every weight is 1)."""
        return self.alpha / self.fail_weight

    @property
    def warn_threshold(self) -> float:
        """The warn threshold of a rule of weight 1."""
        return self.warn_alpha / self.warn_weight

    def fail_threshold_of(self, rule: Rule) -> float:
        """``alpha * weight / sum of the fail rules' weights``: weighted Bonferroni, so the
        gate's false-fail rate under no change stays <= alpha for any weights fixed before
        the data are seen (Genovese, Roeder & Wasserman 2006, Biometrika 93:509)."""
        return self.alpha * rule.weight / self.fail_weight

    def warn_threshold_of(self, rule: Rule) -> float:
        """``warn_alpha * weight / sum of all rules' weights``."""
        return self.warn_alpha * rule.weight / self.warn_weight

    def needs(self) -> frozenset[str]:
        """Extra embedding views the enabled checks read."""
        from auditor.checks import registry

        reg = registry()
        out: set[str] = set()
        for r in self.rules:
            out |= reg[r.check].needs
        return frozenset(out)

    def describe(self) -> dict[str, Any]:
        """What goes into report.json's "rules" block.

        ``sha256`` (of the rules file's bytes) and ``rules`` (each rule's name, check,
        severity and whether it is enabled; the disabled ones last) make a rules file that weakens the gate
        visible in the report; ``matches_default`` says whether it is the bundled default.
        """
        return {
            "path": self.path,
            "sha256": self.sha256,
            "matches_default": self.sha256 is not None and self.sha256 == default_rules_sha256(),
            "alpha": self.alpha,
            "warn_alpha": self.warn_alpha,
            "n_rules": len(self.rules),
            "n_fail_rules": self.n_fail_rules,
            "fail_threshold": self.fail_threshold,
            "warn_threshold": self.warn_threshold,
            "fail_weight": self.fail_weight,
            "names": [r.name for r in self.rules],
            "rules": [
                {
                    "name": r.name,
                    "check": r.check,
                    "severity": r.severity,
                    "enabled": r.enabled,
                    "weight": r.weight,
                    # what this rule's findings are graded against (None: disabled, never run)
                    "fail_threshold": self.fail_threshold_of(r) if r.enabled and r.severity == "fail" else None,
                    "warn_threshold": self.warn_threshold_of(r) if r.enabled and r.severity != "info" else None,
                }
                for r in (*self.rules, *self.disabled)
            ],
            "multiple_testing": (
                "p-values are Benjamini-Hochberg adjusted within each check; the gate fails a "
                f"finding when p < alpha * weight / {self.fail_weight:g} (weighted Bonferroni across "
                f"the {self.n_fail_rules} rules that can fail; each rule's threshold is in rules[]), so "
                "the whole gate's false-fail rate under no change is at most alpha"
            ),
            # only when declared, so reports of rules files without one stay as they were
            **({"policy": list(self.policy)} if self.policy else {}),
        }


def default_rules_sha256() -> str:
    """sha256 of the bundled default rules file."""
    return hashlib.sha256(DEFAULT_RULES_PATH.read_bytes()).hexdigest()


def _err(path: str, where: str, msg: str) -> AuditorError:
    return AuditorError(f"{path}: {where}: {msg}")


def _check_value(path: str, where: str, spec: Param, value: Any) -> None:
    problem = spec.problem(value)
    if problem is not None:
        raise _err(path, where, problem)


def _alpha(path: str, where: str, value: Any) -> float:
    if _ALPHA.problem(value) is not None:
        raise _err(path, where, f"{value!r} is not a probability in {_ALPHA._interval()}")
    return float(value)


def parse_rules(data: Any, path: str, *, sha256: str | None = None) -> Rules:
    """Validate a parsed rules document; every problem names the file and the key.

    Checks and their parameters are validated against ``PARAMS`` alone, so a bad rules
    file is reported without importing any check family.
    """
    if not isinstance(data, Mapping):
        raise _err(path, "top level", f"expected a mapping with keys {sorted(_TOP_KEYS)}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _err(
            path, str(sorted(unknown, key=str)[0]), f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})"
        )
    if data.get("version", 1) != 1 or isinstance(data.get("version", 1), bool):
        raise _err(path, "version", f"unsupported version {data.get('version')!r} (expected 1)")
    alpha = _alpha(path, "alpha", data.get("alpha", 0.01))
    warn_alpha = _alpha(path, "warn_alpha", data.get("warn_alpha", 0.05))
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise _err(path, "rules", "expected a non-empty list of rules")
    declared: list[Rule] = []
    names: set[str] = set()
    for i, raw in enumerate(raw_rules):
        declared.append(_parse_rule(raw, f"rules[{i}]", path, names))
    rules = tuple(r for r in declared if r.enabled)
    if not rules:
        raise _err(path, "rules", "every rule is disabled")
    return Rules(
        rules=rules,
        alpha=alpha,
        warn_alpha=warn_alpha,
        path=path,
        sha256=sha256,
        disabled=tuple(r for r in declared if not r.enabled),
        policy=_parse_policy_key(path, data["policy"]) if "policy" in data else (),
    )


# --- curation policy (issue 15; auditor/policy.py owns the syntax) --------------------
def _parse_policy_key(path: str, raw: Any) -> tuple[str, ...]:
    """``policy:`` -> its specs, each checked by ``auditor.policy.parse_policy`` (imported
    only when a file declares one, so a bad rules file is still reported without numpy)."""
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x.strip() for x in raw):
        raise _err(path, "policy", "expected a non-empty list of policy strings (e.g. [dedup:0.9, filter:min_chars=20])")
    from auditor.policy import parse_policy

    for i, spec in enumerate(raw):
        parse_policy([spec], where=f"{path}: policy[{i}]")
    parse_policy(list(raw), where=f"{path}: policy")
    return tuple(s.strip() for s in raw)


def _parse_rule(raw: Any, where: str, path: str, names: set[str]) -> Rule:
    if not isinstance(raw, Mapping):
        raise _err(path, where, "expected a mapping")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        key = sorted(unknown, key=str)[0]
        raise _err(path, f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_RULE_KEYS))})")
    check = raw.get("check")
    if not isinstance(check, str) or check not in PARAMS:
        raise _err(path, f"{where}.check", f"unknown check {check!r} (known: {', '.join(sorted(PARAMS))})")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _err(path, f"{where}.enabled", f"{enabled!r} should be true or false")
    name = raw.get("name", check)
    if not isinstance(name, str) or not name.strip():
        raise _err(path, f"{where}.name", f"{name!r} should be a non-empty string")
    # disabled rules count too: two rules of one name would make the report ambiguous
    if name in names:
        raise _err(path, f"{where}.name", f"duplicate rule name {name!r}")
    names.add(name)
    severity = raw.get("severity", "fail")
    if severity not in SEVERITIES:
        raise _err(path, f"{where}.severity", f"{severity!r} (expected one of {', '.join(SEVERITIES)})")
    why = raw.get("why", "")
    if not isinstance(why, str):
        raise _err(path, f"{where}.why", f"{why!r} should be text")
    params = raw.get("params")
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise _err(path, f"{where}.params", "expected a mapping")
    allowed = PARAMS[check]
    for key, value in params.items():
        if key not in allowed:
            raise _err(
                path,
                f"{where}.params.{key}",
                f"unknown parameter for check {check!r} (allowed: {', '.join(sorted(allowed)) or 'none'})",
            )
        _check_value(path, f"{where}.params.{key}", allowed[key], value)
    min_effect = raw.get("min_effect")
    if min_effect is not None:
        _check_value(path, f"{where}.min_effect", _MIN_EFFECT, min_effect)
    weight = raw.get("weight", 1.0)
    _check_value(path, f"{where}.weight", _WEIGHT, weight)
    return Rule(
        name=name,
        check=check,
        severity=severity,
        params=dict(params),
        why=why.strip(),
        min_effect=float(min_effect) if min_effect is not None else None,
        enabled=enabled,
        weight=float(weight),
    )


def _strict_loader() -> type:
    """A SafeLoader that refuses duplicate mapping keys and aliases/anchors.

    PyYAML keeps the last of two equal keys, so ``severity: info`` after ``severity:
    fail`` (or a second ``rules:`` block) would silently win; aliases let a few lines
    expand into gigabytes (a "billion laughs" bomb).  Neither has a use in a rules file.
    """
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                what = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
                raise yaml.MarkedYAMLError(
                    problem=f"YAML {what} '{anchor}' is not allowed in a rules file (write the value out)",
                    problem_mark=event.start_mark,
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        first = seen.get(key)
                    except TypeError:  # an unhashable key: the base constructor reports it
                        continue
                    if first is not None:
                        raise yaml.MarkedYAMLError(
                            problem=f"duplicate key {key!r} (first at line {first}; each key may appear once)",
                            problem_mark=key_node.start_mark,
                        )
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _yaml_error(p: Path, err: Exception) -> AuditorError:
    mark = getattr(err, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return AuditorError(f"{p}{line}: invalid YAML ({problem})")


def load_rules(path: str | Path | None = None) -> Rules:
    """Load and validate a rules file (the bundled default when ``path`` is None)."""
    import yaml

    p = DEFAULT_RULES_PATH if path is None else Path(path)
    if not p.exists():
        raise AuditorError(f"{p}: rules file not found")
    if not p.is_file():
        raise AuditorError(f"{p}: rules file is not a regular file")
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_RULES_BYTES + 1)
    except OSError as err:
        raise AuditorError(f"{p}: cannot read rules file ({err.strerror or err})") from err
    if len(raw) > MAX_RULES_BYTES:
        raise AuditorError(
            f"{p}: rules file larger than {MAX_RULES_BYTES} bytes (expected a short YAML file)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise AuditorError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    try:
        data = yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise _yaml_error(p, err) from err
    except RecursionError as err:
        raise AuditorError(f"{p}: invalid YAML (nested too deeply)") from err
    return parse_rules(
        data,
        str(path) if path is not None else "rules/default.yaml",
        sha256=hashlib.sha256(raw).hexdigest(),
    )

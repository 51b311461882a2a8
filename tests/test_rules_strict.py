"""Strict rules (issue 10, item 4): each attack on the rules file is reproduced first and
must exit 2, fast, naming the file and the key; the range table covers every check."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.rules import DEFAULT_RULES_PATH, PARAMS, SEVERITIES, Param, load_rules, parse_rules
from auditor.types import SEVERITIES as TYPE_SEVERITIES
from auditor.types import AuditorError
from tests.helpers import ROOT

SAMPLE = ROOT / "sample_data"

BASE = """version: 1
alpha: 0.01
rules:
  - name: drift
    check: mmd
    severity: fail
    params: {permutations: 1000}
  - name: clf
    check: classifier
    severity: fail
  - name: topics
    check: clusters
    severity: fail
  - name: trig
    check: triggers
    severity: fail
"""

ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    + "rules:\n  - check: mmd\n    why: *i\n"
)

# name -> (rules text, what the one-line error must contain)
ATTACKS: dict[str, tuple[str, str]] = {
    "duplicate severity key": (
        BASE.replace(
            "    severity: fail\n    params", "    severity: fail\n    severity: info\n    params", 1
        ),
        "duplicate key 'severity'",
    ),
    "second rules block": (BASE + "rules:\n  - check: mmd\n    severity: info\n", "duplicate key 'rules'"),
    "mmd permutations 0": (
        BASE.replace("permutations: 1000", "permutations: 0"),
        "rules[0].params.permutations: 0 is out of range (integer 99..1000000)",
    ),
    "classifier folds 1": (
        BASE.replace(
            "check: classifier\n    severity: fail\n", "check: classifier\n    params: {folds: 1}\n"
        ),
        "rules[1].params.folds: 1 is out of range (integer 2..100)",
    ),
    "clusters ks [0]": (
        BASE.replace("check: clusters\n    severity: fail\n", "check: clusters\n    params: {ks: [0]}\n"),
        "rules[2].params.ks: 0 in [0] is out of range",
    ),
    "triggers alpha 0": (
        BASE.replace("check: triggers\n    severity: fail\n", "check: triggers\n    params: {alpha: 0}\n"),
        "rules[3].params.alpha: 0 is out of range (number in (0, 1])",
    ),
    "triggers max_findings -1": (
        BASE.replace(
            "check: triggers\n    severity: fail\n", "check: triggers\n    params: {max_findings: -1}\n"
        ),
        "rules[3].params.max_findings: -1 is out of range",
    ),
    "classifier C 0": (
        BASE.replace("check: classifier\n    severity: fail\n", "check: classifier\n    params: {C: 0}\n"),
        "rules[1].params.C: 0 is out of range",
    ),
    "clusters ks 'abc'": (
        BASE.replace("check: clusters\n    severity: fail\n", "check: clusters\n    params: {ks: abc}\n"),
        "rules[2].params.ks: 'abc' should be a non-empty list of integers",
    ),
    "flips k 0": (
        BASE + "  - check: flipped_responses\n    params: {k: 0}\n",
        "rules[4].params.k: 0 is out of range",
    ),
    "alias bomb": (ALIAS_BOMB, "YAML anchor 'a' is not allowed"),
}


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_base_rules_are_valid(tmp_path):
    rules = load_rules(write(tmp_path, BASE))
    assert [r.name for r in rules.rules] == ["drift", "clf", "topics", "trig"]


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_rules_attack_refused_at_load(tmp_path, attack):
    text, needle = ATTACKS[attack]
    p = write(tmp_path, text)
    t0 = time.perf_counter()
    with pytest.raises(AuditorError) as err:
        load_rules(p)
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert msg.startswith(str(p)) and needle in msg and "\n" not in msg, msg


def test_duplicate_key_names_the_line(tmp_path):
    p = write(tmp_path, ATTACKS["duplicate severity key"][0])
    with pytest.raises(
        AuditorError, match=r"rules\.yaml:7: invalid YAML \(duplicate key 'severity' \(first at line 6"
    ):
        load_rules(p)


def test_plain_alias_refused_too(tmp_path):
    p = write(tmp_path, "x: &w hello\nrules:\n  - check: mmd\n    why: *w\n")
    with pytest.raises(AuditorError, match="anchor 'w' is not allowed"):
        load_rules(p)


@pytest.mark.parametrize(
    "attack", ["duplicate severity key", "mmd permutations 0", "alias bomb", "clusters ks 'abc'"]
)
def test_rules_attack_exits_2_fast_from_the_cli(tmp_path, attack):
    """Through the command line: exit 2, one line naming the key, nothing written, and no
    model or check family loaded first (so it is fast)."""
    text, needle = ATTACKS[attack]
    rules = write(tmp_path, text)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "audit", str(SAMPLE / "alpaca_sample.jsonl"), "-r",
         str(SAMPLE / "seed_tasks.jsonl"), "--rules", str(rules), "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not out.exists()
    assert elapsed < 5.0  # interpreter + typer start-up only; a model load takes ~10 s


@pytest.mark.parametrize(
    "text, needle",
    [
        ("alpha: 0\nrules:\n  - check: mmd\n", "alpha: 0 is not a probability in (0, 0.5]"),
        ("alpha: 0.6\nrules:\n  - check: mmd\n", "alpha: 0.6 is not a probability"),
        ("warn_alpha: .nan\nrules:\n  - check: mmd\n", "warn_alpha: nan is not a probability"),
        ("rules:\n  - check: mmd\n    min_effect: -1\n", "rules[0].min_effect: -1 is out of range"),
        ("rules:\n  - check: mmd\n    enabled: 'no'\n", "rules[0].enabled: 'no' should be true or false"),
        ("rules:\n  - check: mmd\n    severity: INFO\n", "rules[0].severity: 'INFO'"),
        (
            "rules:\n  - check: mmd\n  - check: mmd\n    enabled: false\n",
            "rules[1].name: duplicate rule name 'mmd'",
        ),
        ("rules:\n  - check: mmd\n    name: ''\n", "rules[0].name: '' should be a non-empty string"),
        (
            "rules:\n  - check: mmd\n    params: {large: fast}\n",
            "'fast' is not allowed (one of rff, subsample)",
        ),
        ("rules:\n  - check: mmd\n    params: {permutations: 1500.0}\n", "1500.0 should be an integer"),
        ("rules:\n  - check: mmd\n    params: {permutations: true}\n", "True should be an integer"),
        ("rules:\n  - check: clusters\n    params: {ks: []}\n", "should be a non-empty list"),
        ("rules:\n  - check: clusters\n    params: {hierarchy: 1}\n", "1 should be true or false"),
        ("rules:\n  - check: near_duplicates\n    params: {min_attainable: 1}\n", "(number in (0, 1))"),
        ("rules:\n  - check: off_support\n    params: {alpha_flag: .inf}\n", "inf is out of range"),
        ("rules:\n  - check: mmd\n    why: [1]\n", "rules[0].why: [1] should be text"),
        ("version: true\nrules:\n  - check: mmd\n", "unsupported version True"),
        ("rules:\n  - check: mmd\n    weight: 0\n", "rules[0].weight: 0 is out of range"),
        ("rules:\n  - check: mmd\n    weight: -1\n", "rules[0].weight: -1 is out of range"),
        ("rules:\n  - check: mmd\n    weight: .inf\n", "rules[0].weight: inf is out of range"),
        ("rules:\n  - check: mmd\n    weight: .nan\n", "rules[0].weight: nan is out of range"),
        ("rules:\n  - check: mmd\n    weight: heavy\n", "rules[0].weight: 'heavy' should be a number"),
        ("rules:\n  - check: mmd\n    weight: true\n", "rules[0].weight: True should be a number"),
        ("rules:\n  - check: mmd\n    weight: null\n", "rules[0].weight: null is not allowed"),
    ],
)
def test_ranges_and_top_level_keys(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(AuditorError) as err:
        load_rules(p)
    assert needle in str(err.value), str(err.value)


def test_null_ks_means_the_checks_default(tmp_path):
    rules = load_rules(write(tmp_path, "rules:\n  - check: clusters\n    params: {ks: null}\n"))
    assert rules.rules[0].params == {"ks": None}


def test_every_registered_parameter_has_a_range_and_its_default_is_in_it():
    """A check's keyword parameters must all be declared in PARAMS (and nothing else):
    adding a check or a parameter without its valid range fails here."""
    from auditor.checks import registry

    reg = registry()
    assert set(PARAMS) == set(reg)
    for name, spec in reg.items():
        assert set(PARAMS[name]) == set(spec.defaults), name
        for key, default in spec.defaults.items():
            assert PARAMS[name][key].problem(default) is None, (name, key, default)


def test_severities_agree_with_types():
    assert SEVERITIES == TYPE_SEVERITIES


def test_default_rules_are_inside_the_package_and_rules_dir_points_at_them():
    assert DEFAULT_RULES_PATH.is_file() and DEFAULT_RULES_PATH.parent.parent.name == "auditor"
    assert (ROOT / "rules" / "default.yaml").resolve() == DEFAULT_RULES_PATH.resolve()


def test_describe_records_sha256_and_every_rules_severity(tmp_path):
    default = load_rules().describe()
    assert default["sha256"] == hashlib.sha256(DEFAULT_RULES_PATH.read_bytes()).hexdigest()
    assert default["matches_default"] is True
    assert all(r["severity"] == "fail" and r["enabled"] for r in default["rules"])
    weakened = BASE.replace(
        "    check: clusters\n    severity: fail\n", "    check: clusters\n    severity: info\n"
    )
    weakened = weakened.replace("    check: triggers\n", "    check: triggers\n    enabled: false\n")
    p = write(tmp_path, weakened)
    d = load_rules(p).describe()
    assert d["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest() and d["matches_default"] is False
    # each rule's weight and the thresholds its findings are graded against (none for a
    # rule that cannot fail or warn, or does not run)
    warn = pytest.approx(d["warn_alpha"] / 3)
    assert d["rules"] == [
        {"name": "drift", "check": "mmd", "severity": "fail", "enabled": True, "weight": 1.0,
         "fail_threshold": pytest.approx(d["alpha"] / 2), "warn_threshold": warn},
        {"name": "clf", "check": "classifier", "severity": "fail", "enabled": True, "weight": 1.0,
         "fail_threshold": pytest.approx(d["alpha"] / 2), "warn_threshold": warn},
        {"name": "topics", "check": "clusters", "severity": "info", "enabled": True, "weight": 1.0,
         "fail_threshold": None, "warn_threshold": None},
        {"name": "trig", "check": "triggers", "severity": "fail", "enabled": False, "weight": 1.0,
         "fail_threshold": None, "warn_threshold": None},
    ]
    assert d["names"] == ["drift", "clf", "topics"] and d["n_fail_rules"] == 2
    json.dumps(d)  # goes into report.json as is


def test_parse_rules_without_a_file_has_no_sha256():
    d = parse_rules({"rules": [{"check": "mmd"}]}, "x.yaml").describe()
    assert d["sha256"] is None and d["matches_default"] is False


def test_rules_that_are_not_a_regular_file_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "rules.yaml"
    os.mkfifo(fifo)
    with pytest.raises(AuditorError, match="not a regular file"):
        load_rules(fifo)
    with pytest.raises(AuditorError, match="not a regular file"):
        load_rules(tmp_path)


def test_oversized_rules_file_is_refused(tmp_path):
    p = write(tmp_path, "rules:\n  - check: mmd\n" + "#" * (1 << 20) + "\n")
    with pytest.raises(AuditorError, match="larger than"):
        load_rules(p)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(-5, 10**6), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_SLOTS = [(c, k) for c, ps in PARAMS.items() for k in ps]


@settings(max_examples=300, deadline=None)
@given(slot=st.sampled_from(_SLOTS), value=_VALUES)
def test_any_parameter_value_is_accepted_in_range_or_refused_cleanly(slot, value):
    """Whatever a rules file says, parsing either accepts a value inside the declared range
    or raises AuditorError naming the key: never another exception."""
    check, key = slot
    spec: Param = PARAMS[check][key]
    try:
        rules = parse_rules({"rules": [{"check": check, "params": {key: value}}]}, "r.yaml")
    except AuditorError as err:
        assert f"r.yaml: rules[0].params.{key}: " in str(err)
        assert spec.problem(value) is not None
        return
    assert spec.problem(value) is None
    got = rules.rules[0].params[key]
    if spec.kind in ("int", "float") and value is not None:
        assert spec.lo is not None and spec.hi is not None and spec.lo <= got <= spec.hi


def test_validity_reason_codes_agree_with_the_check() -> None:
    """rules.py keeps validity's reason codes so a bad rules file is refused without
    importing the check; the two lists must not drift apart."""
    from auditor.checks.validity import REASONS
    from auditor.rules import VALIDITY_REASONS

    assert tuple(REASONS) == VALIDITY_REASONS

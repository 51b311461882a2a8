"""Curation rounds as they really happen (issue 15): a declared or inferred dedup/filter
policy explains its removals; only the unexplained change is tested, on real Alpaca
texts with their real all-MiniLM-L6-v2 embeddings."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from auditor.curation import diff_report
from auditor.errors import AuditorError
from auditor.index import kmeans
from auditor.policy import attribute, parse_policy
from auditor.rules import load_rules
from auditor.textutil import batch_from_texts
from auditor.types import ModelInfo, Snapshot
from tests.helpers import alpaca_minilm, alpaca_records

N = 1500
MODEL = ModelInfo(name="all-MiniLM-L6-v2", sha256="a" * 64, dim=384)


@cache
def root() -> Snapshot:
    rows = alpaca_records()[:N]
    prompts = [(r["instruction"] + "\n" + r["input"]).strip() for r in rows]
    responses = [r["output"] for r in rows]
    texts = [f"{p}\n{r}" for p, r in zip(prompts, responses, strict=True)]
    batch = batch_from_texts(texts, ids=[f"a{i}" for i in range(N)], prompts=prompts, responses=responses)
    return Snapshot(batch=batch, embeddings=np.array(alpaca_minilm()[:N]), model=MODEL)


@cache
def basis() -> np.ndarray:
    return kmeans(root().embeddings, 24, seed=0)[0]


def dedup(snap: Snapshot, th: float, order: np.ndarray) -> tuple[list[int], list[int]]:
    """Greedy semantic dedup in ``order`` (keep unless a kept record is at cosine >= th)."""
    sims = snap.embeddings @ snap.embeddings.T
    np.fill_diagonal(sims, -1)
    kept = np.zeros(len(snap), dtype=bool)
    removed = []
    for i in order:
        if kept[sims[i] >= th].any():
            removed.append(int(i))
        else:
            kept[i] = True
    return np.flatnonzero(kept).tolist(), removed


def fails(report):  # type: ignore[no-untyped-def]
    return [f for f in report.findings if f.severity == "fail"]


def test_parse_policy_declared_and_refused() -> None:
    pol = parse_policy(["dedup:0.9", "filter:min_chars=20", "filter:empty=response"])
    assert pol is not None and pol.source == "declared" and pol.dedup == 0.9
    assert dict(pol.filters) == {"min_chars": 20, "min_response_chars": 1}
    assert parse_policy(None) is None and parse_policy(["infer"]) is None
    for bad in (["dedup:1.5"], ["dedup:x"], ["filter:colour=3"], ["shuffle"], ["none", "dedup:0.9"]):
        with pytest.raises(AuditorError, match="--policy"):
            parse_policy(bad)


def test_honest_dedup_step_passes_and_is_attributed() -> None:
    a = root()
    keep, removed = dedup(a, 0.8, np.random.default_rng(0).permutation(N))
    b = a.subset(keep)
    att = attribute(a, b)
    assert att.policy.source == "inferred" and att.policy.dedup is not None and att.policy.dedup <= 0.8
    assert att.counts["removed_duplicate"] == len(removed) and att.counts["removed_unexplained"] == 0
    report, _ = diff_report(a, b, load_rules(None), seed=0, basis=basis())
    assert fails(report) == [], [(f.check, f.summary) for f in fails(report)]
    rec = next(f for f in report.findings if f.check == "round_records")
    assert "dedup at cosine" in rec.summary
    block = rec.details["diff_block"]
    assert dict(map(tuple, block["rows"]))["removed: duplicate"] == len(removed)
    assert dict(map(tuple, block["rows"]))["removed: unexplained"] == 0 and block["unexplained"] == []


def test_filter_step_passes_declared_and_inferred() -> None:
    a = root()
    lengths = np.array([len(t) for t in a.texts])
    floor = int(np.quantile(lengths, 0.1))
    b = a.subset([i for i in range(N) if lengths[i] >= floor])
    for policy in (None, [f"filter:min_chars={floor}"]):
        report, _ = diff_report(a, b, load_rules(None), seed=0, basis=basis(), policy=policy)
        assert fails(report) == [], policy
    # declaring no policy makes the same step an unexplained, targeted removal
    report, _ = diff_report(a, b, load_rules(None), seed=0, basis=basis(), policy=["none"])
    assert fails(report)


def test_dedup_hiding_a_topic_thinning_fails_naming_the_records() -> None:
    a = root()
    rng = np.random.default_rng(1)
    keep, _ = dedup(a, 0.8, rng.permutation(N))
    sims = a.embeddings @ a.embeddings.T
    np.fill_diagonal(sims, -1)
    nondup = sims.max(axis=1) < 0.8
    topic = kmeans(a.embeddings, 10, seed=1)[1]
    t = int(np.bincount(topic).argmax())
    cand = [i for i in keep if nondup[i] and topic[i] == t]
    planted = set(rng.choice(cand, int(0.4 * len(cand)), replace=False).tolist())
    b = a.subset([i for i in keep if i not in planted])
    report, _ = diff_report(a, b, load_rules(None), seed=0, basis=basis(), policy=["dedup:0.8"])
    named = {i for f in fails(report) for i in f.record_ids}
    planted_ids = {a.ids[i] for i in planted}
    assert named, [(f.check, f.summary) for f in report.findings]
    assert len(named & planted_ids) / len(named) >= 0.5
    assert len(named & planted_ids) / len(planted_ids) >= 0.5
    block = next(f for f in report.findings if f.check == "round_records").details["diff_block"]
    assert dict(map(tuple, block["rows"]))["removed: unexplained"] == len(planted)
    assert block["unexplained"] and block["unexplained"][0]["severity"] == "fail"
    assert {u["check"] for u in block["unexplained"]} == {f.check for f in fails(report)}
    # report.md and HTML read counts first, then the unexplained change
    from auditor.report import render_markdown
    from auditor.report.html import diff_block_html

    md = render_markdown(report)
    assert md.index(f"| removed: unexplained | {len(planted)} |") < md.index("**Unexplained change:**")
    assert md.index("**Unexplained change:**") < md.index("| # | Severity")
    html = diff_block_html(report)
    assert "What this round changed" in html and "Unexplained change" in html


def test_duplicates_resolved_towards_the_shortest_answer_fail() -> None:
    a = root()
    resp = a.batch.responses
    assert resp is not None
    # keep the shortest answer of every duplicate group (a systematic choice)
    keep, removed = dedup(a, 0.7, np.argsort([len(r) for r in resp], kind="stable"))
    b = a.subset(keep)
    report, _ = diff_report(a, b, load_rules(None), seed=0, basis=basis(), policy=["dedup:0.7"])
    res = next(f for f in report.findings if f.check == "dedup_resolution")
    assert res.severity == "fail" and res.details["statistic_won"] == "length"
    assert set(res.record_ids) <= {a.ids[i] for i in removed}
    # the same groups resolved at random pass
    keep, _ = dedup(a, 0.7, np.random.default_rng(2).permutation(N))
    report, _ = diff_report(a, a.subset(keep), load_rules(None), seed=0, basis=basis(), policy=["dedup:0.7"])
    assert fails(report) == []


def test_seventeen_added_records_get_insufficient_data_not_trigger_phrases() -> None:
    a = root().subset(range(1000))
    extra = root().subset(range(1000, 1017))
    from auditor.policy import concat

    b = concat([a, extra])
    report, _ = diff_report(a, b, load_rules(None), seed=0, basis=basis())
    rule_checks = {r.check for r in load_rules(None).rules}
    assert not [f for f in report.findings if f.check in rule_checks]
    notes = [f for f in report.findings if f.check == "gate"]
    assert notes and all(f.severity == "info" and "insufficient data" in f.summary for f in notes)
    assert {o.status for o in report.outcomes if o.check in rule_checks} == {"insufficient"}


def _rules_file(tmp_path, policy_yaml: str):  # type: ignore[no-untyped-def]
    from auditor.rules import DEFAULT_RULES_PATH

    p = tmp_path / "rules.yaml"
    p.write_text(DEFAULT_RULES_PATH.read_text() + "\n" + policy_yaml + "\n")
    return p


def test_rules_file_declares_the_policy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = load_rules(_rules_file(tmp_path, "policy: [dedup:0.9, 'filter:min_chars=20']"))
    assert rules.policy == ("dedup:0.9", "filter:min_chars=20")
    assert rules.describe()["policy"] == ["dedup:0.9", "filter:min_chars=20"]
    # a file without one reports as before (no key), and infers
    assert load_rules(None).policy == () and "policy" not in load_rules(None).describe()


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        ("policy: dedup:0.9", "non-empty list"),
        ("policy: []", "non-empty list"),
        ("policy: [dedup:1.5]", r"policy\[0\]: 'dedup:1.5' threshold"),
        ("policy: [dedup:0.9, 'filter:colour=3']", r"policy\[1\]: 'filter:colour=3' is not a known filter"),
        ("policy: [dedup:0.9, dedup:0.8]", "repeats 'dedup'"),
        ("policy: [none, dedup:0.8]", "'none' cannot be combined"),
        ("policy: [infer, dedup:0.8]", "'infer' cannot be combined"),
    ],
)
def test_rules_file_policy_is_strict(tmp_path, yaml_text: str, match: str) -> None:  # type: ignore[no-untyped-def]
    path = _rules_file(tmp_path, yaml_text)
    with pytest.raises(AuditorError, match=match) as err:
        load_rules(path)
    assert str(path) in str(err.value)


def test_rules_policy_applies_and_the_command_line_wins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = root()
    lengths = np.array([len(t) for t in a.texts])
    floor = int(np.quantile(lengths, 0.1))
    b = a.subset([i for i in range(N) if lengths[i] >= floor])
    # the rules file says nothing is explained: the filter step is unexplained removal
    strict = load_rules(_rules_file(tmp_path, "policy: [none]"))
    report, _ = diff_report(a, b, strict, seed=0, basis=basis())
    rec = next(f for f in report.findings if f.check == "round_records")
    assert fails(report) and rec.details["attribution"]["policy"]["source"].startswith("declared in ")
    # the command line's declared filter overrides the file's policy
    report, _ = diff_report(a, b, strict, seed=0, basis=basis(), policy=[f"filter:min_chars={floor}"])
    assert fails(report) == []


def test_a_dedup_that_removes_one_record_is_explained() -> None:
    # a dedup at a high threshold often removes a single record: the closest pair's
    # duplicate, which no kept pair comes near, is a dedup however few it is
    a = root()
    sims = a.embeddings @ a.embeddings.T
    np.fill_diagonal(sims, -1)
    i = int(np.argmax(sims.max(axis=1)))
    b = a.subset([k for k in range(N) if k != i])
    att = attribute(a, b)
    assert att.counts["removed_duplicate"] == 1 and att.policy.dedup is not None
    report, _ = diff_report(a, b, load_rules(None), seed=0, basis=basis())
    assert fails(report) == []


def test_pooled_resolution_names_only_the_systematic_step() -> None:
    from auditor.policy import DupGroups, dedup_resolution

    rng = np.random.default_rng(0)
    g, g1 = 40, 30  # 30 groups in step s1, 10 in s2, two members each
    length = rng.normal(5.0, 1.0, 2 * g)
    kept = []
    for k in range(g):
        lo, hi = (2 * k, 2 * k + 1) if length[2 * k] <= length[2 * k + 1] else (2 * k + 1, 2 * k)
        # step s1 always keeps the shorter member, step s2 one at random
        kept.append(lo if k < g1 else int(rng.choice([lo, hi])))
    steps = tuple("s1" if r < 2 * g1 else "s2" for r in range(2 * g))
    groups = DupGroups(
        x=rng.normal(size=(2 * g, 4)),
        length=length,
        member_of=np.repeat(np.arange(g), 2),
        kept=np.asarray(kept),
        ids=tuple(f"r{r}" for r in range(2 * g)),
        texts=tuple("" for _ in range(2 * g)),
        step=steps,
    )
    f = dedup_resolution(groups, seed=0, n_permutations=999)
    assert f.p_value is not None and f.p_value < 0.01
    assert f.details["steps_resolved_systematically"] == ["s1"]
    assert f.record_ids and all(int(i[1:]) < 2 * g1 for i in f.record_ids)

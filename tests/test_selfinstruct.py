"""auditor selfinstruct (issue 12): ROUGE-L exactness and pruning, the four checks on real
Alpaca / Self-Instruct / Code Alpaca data with planted groups, and the command's exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditor.rouge import lcs_length, max_rouge_to, near_copies_within, rouge_l, tokenize
from auditor.tasks import load_tasks, task_fields
from tests.fakes import FakeEncoder
from tests.helpers import ROOT, alpaca_records, data

POOL = 300  # clean Alpaca records in the planted pool (the benchmark uses all 5,000)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _edit_one_word(text: str, rng: np.random.Generator) -> str:
    """Replace one word of ``text`` (not the first) by another, as a light-edit copy would."""
    words = text.split()
    k = int(rng.integers(1, len(words)))
    words[k] = "particular" if words[k].lower() != "particular" else "specific"
    return " ".join(words)


def plant(
    records: list[dict[str, Any]],
    seeds: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    *,
    n_pool: int,
    per_group: int = 12,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, set[int]]]:
    """A clean pool (the first ``n_pool`` records) plus planted groups, shuffled.

    Groups (positions in the returned list): seed copies with one word changed, near copies
    of earlier pool instructions, records breaking the pipeline's filters (empty output,
    output = input, keyword instructions), copies of evaluation items.  Filter and eval
    groups are built from records outside the pool so they copy nothing else.
    """
    rng = np.random.default_rng(seed)
    pool = [dict(r) for r in records[:n_pool]]
    fresh = iter(records[n_pool:])
    planted: list[tuple[str, dict[str, Any]]] = []
    long_seeds = [s for s in seeds if len(s["instruction"].split()) >= 8]
    for s in rng.choice(len(long_seeds), per_group, replace=False):
        t = long_seeds[int(s)]
        inst = t["instances"][0]
        planted.append(
            (
                "novelty_seed",
                {
                    "instruction": _edit_one_word(t["instruction"], rng),
                    "input": inst["input"],
                    "output": inst["output"],
                },
            )
        )
    long_pool = [r for r in pool if len(r["instruction"].split()) >= 8]
    for k in rng.choice(len(long_pool), per_group, replace=False):
        r = long_pool[int(k)]
        planted.append(
            (
                "novelty_batch",
                {
                    "instruction": _edit_one_word(r["instruction"], rng),
                    "input": r["input"],
                    "output": r["output"][::-1],
                },
            )
        )
    for kind in ("empty_output", "output_equals_input", "keyword"):
        for _ in range(per_group // 3):
            r = dict(next(fresh))
            while kind == "output_equals_input" and not r["input"]:
                r = dict(next(fresh))
            if kind == "empty_output":
                r["output"] = ""
            elif kind == "output_equals_input":
                r["output"] = r["input"]
            else:
                r["instruction"] = r["instruction"].rstrip(".") + ", and draw a picture of it."
            planted.append(("validity", r))
    long_evals = [
        e for e in evals if len((e["instruction"] + " " + e["instances"][0]["input"]).split()) >= 20
    ]
    for k in rng.choice(len(long_evals), per_group, replace=False):
        e = long_evals[int(k)]
        inst = e["instances"][0]
        edited = _edit_one_word(e["instruction"], rng) if k % 2 else e["instruction"]
        planted.append(
            ("contamination", {"instruction": edited, "input": inst["input"], "output": inst["output"]})
        )
    # planted records go after the pool (a copy follows what it copies), in shuffled order
    order = rng.permutation(len(planted))
    out = pool + [planted[i][1] for i in order]
    groups: dict[str, set[int]] = {}
    for pos, i in enumerate(order):
        groups.setdefault(planted[i][0], set()).add(n_pool + pos)
    return out, groups


@cache
def _planted() -> tuple[list[dict[str, Any]], dict[str, set[int]]]:
    return plant(
        alpaca_records(),
        _read_jsonl(data("self_instruct_seed_tasks.jsonl")),
        _read_jsonl(data("user_oriented_instructions.jsonl")),
        n_pool=POOL,
    )


def _precision_recall(found: set[str], truth: set[str]) -> tuple[float, float]:
    tp = len(found & truth)
    return (tp / len(found) if found else 0.0), (tp / len(truth) if truth else 1.0)


# ---------------------------------------------------------------------------- ROUGE-L


def test_rouge_l_equals_rouge_score_on_real_instructions() -> None:
    rouge_scorer = pytest.importorskip(
        "rouge_score.rouge_scorer", reason="rouge-score (dev extra) not installed"
    )
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = [r["instruction"] for r in alpaca_records()[:400]] + [
        s["instruction"] for s in _read_jsonl(data("self_instruct_seed_tasks.jsonl"))
    ]
    texts += ["", "!!!", "Déjà vu: naïve café—ÜBER 42", "the the the a", "A a a the"]
    rng = np.random.default_rng(1)
    pairs = [(texts[int(i)], texts[int(j)]) for i, j in rng.integers(0, len(texts), (1500, 2))]
    pairs += [(t, _edit_one_word(t, rng)) for t in texts[:300] if len(t.split()) > 1]
    for a, b in pairs:
        want = scorer.score(a, b)["rougeL"].fmeasure
        assert abs(rouge_l(tokenize(b), tokenize(a)) - want) <= 1e-9, (a, b)
        assert abs(rouge_l(tokenize(a), tokenize(b)) - want) <= 1e-9, (a, b)


def _lcs_dp(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_bit_parallel_lcs_matches_dynamic_programming() -> None:
    rng = np.random.default_rng(2)
    for _ in range(800):
        a = tuple(rng.choice(list("abcde"), int(rng.integers(0, 90))))
        b = tuple(rng.choice(list("abcdef"), int(rng.integers(0, 90))))
        assert lcs_length(a, b) == _lcs_dp(a, b)


def test_pruned_scans_equal_brute_force() -> None:
    recs = alpaca_records()[:250]
    docs = [tokenize(r["instruction"]) for r in recs]
    rng = np.random.default_rng(3)
    docs += [tokenize(_edit_one_word(recs[int(i)]["instruction"], rng)) for i in rng.integers(0, 250, 40)]
    seeds = [tokenize(s["instruction"]) for s in _read_jsonl(data("self_instruct_seed_tasks.jsonl"))]
    for t in (0.5, 0.7):
        pairs, _ = near_copies_within(docs, t)
        got = {(p.later, p.earlier, p.score) for p in pairs}
        want = set()
        for i in range(len(docs)):
            scores = [rouge_l(docs[i], docs[j]) for j in range(i)]
            if scores and max(scores) > t:
                best = max(scores)
                want.add((i, scores.index(best), best))
        assert got == want and len(want) >= 40
    res = max_rouge_to(docs, seeds)
    brute = np.array([max(rouge_l(d, s) for s in seeds) for d in docs])
    assert np.array_equal(res.score, brute)
    assert res.lcs_computed < len(docs) * len(seeds) / 4  # the bound prunes most pairs


# ---------------------------------------------------------------------------- loading


def test_load_tasks_keeps_fields_apart_for_each_real_shape(tmp_path: Path) -> None:
    alp = load_tasks(data("alpaca_5000.json"))
    raw = alpaca_records()
    assert alp.instructions[:50] == tuple(r["instruction"] for r in raw[:50])
    assert alp.inputs[:50] == tuple(r["input"] for r in raw[:50])
    assert alp.outputs[:50] == tuple(r["output"] for r in raw[:50])
    seeds = load_tasks(data("self_instruct_seed_tasks.jsonl"), "id")
    rows = _read_jsonl(data("self_instruct_seed_tasks.jsonl"))
    assert seeds.ids[0] == "seed_task_0"
    assert seeds.instructions == tuple(r["instruction"] for r in rows)
    assert seeds.outputs[1] == rows[1]["instances"][0]["output"]
    code = load_tasks(data("code_alpaca_400.json"))
    assert code.inputs[0].startswith("# Definition for a binary tree node.")
    # GPTeacher: instruction / input / response, as JSONL
    gp = tmp_path / "gpteacher.jsonl"
    gp.write_text(json.dumps({"instruction": "Explain the rule.", "input": "x", "response": "It is."}) + "\n")
    t = task_fields(load_tasks(gp))
    assert (t.instructions, t.inputs, t.outputs) == (("Explain the rule.",), ("x",), ("It is.",))


# ---------------------------------------------------------------------------- the checks


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from auditor.selfinstruct import run_selfinstruct

    recs, _ = _planted()
    gen = tmp_path_factory.mktemp("selfinstruct") / "generated.json"
    gen.write_text(json.dumps(recs), encoding="utf-8")
    return run_selfinstruct(
        gen,
        data("self_instruct_seed_tasks.jsonl"),
        evals=[data("user_oriented_instructions.jsonl")],
        encoder=FakeEncoder(),
        cache_dir=None,
    )


def _found(run: Any, rule: str, group: str | None = None) -> set[str]:
    ids: set[str] = set()
    for f in run.report.findings:
        if f.rule == rule and f.severity == "fail" and (group is None or f.details.get("group") == group):
            ids |= set(f.record_ids)
    return ids


@pytest.mark.parametrize(
    "group, rule, sub",
    [
        ("novelty_seed", "novelty", "seed"),
        ("novelty_batch", "novelty", "batch"),
        ("validity", None, None),
        ("contamination", "contamination", None),
    ],
)
def test_each_planted_group_is_named_by_its_check(
    planted_run: Any, group: str, rule: str | None, sub: str | None
) -> None:
    _, groups = _planted()
    ids = planted_run.current.ids
    truth = {ids[i] for i in groups[group]}
    if rule:
        found = _found(planted_run, rule, sub)
    else:
        found = _found(planted_run, "instruction-filters") | _found(planted_run, "instance-filters")
    precision, recall = _precision_recall(found, truth)
    print(group, f"precision {precision:.3f} recall {recall:.3f} ({len(found)} found, {len(truth)} planted)")
    assert precision >= 0.9 and recall >= 0.9, (group, precision, recall, len(found), len(truth))


def test_planted_pool_fails_and_names_what_each_record_copies(planted_run: Any) -> None:
    run = planted_run
    assert run.report.status == "fail" and run.report.exit_code == 1
    seeds = {f.details["group"]: f for f in run.report.findings if f.check == "novelty"}
    copies = seeds["seed"].details["copies"]
    assert all(v.startswith("seed_task_") for v in copies.values())
    contam = next(f for f in run.report.findings if f.check == "contamination")
    assert all(
        all(m.startswith("user_oriented_task_") for m in ms) for ms in contam.details["matches"].values()
    )
    hist = seeds["histogram"].details["max_rouge_l_to_seeds"]
    assert sum(hist["counts"]) == len(run.current) and len(hist["edges"]) == 21
    # the seed comparison is evidence only
    assert not any(f.severity == "fail" for f in run.report.findings if f.check in ("clusters", "triggers"))


def test_clean_alpaca_pool_honours_its_filters() -> None:
    """The Alpaca release kept its 0.7 ROUGE-L filter and its instruction filters."""
    from auditor.checks.novelty import novelty
    from auditor.checks.validity import validity
    from tests.fakes import fake_snapshot

    cur = fake_snapshot(load_tasks(data("alpaca_5000.json")))
    ref = fake_snapshot(load_tasks(data("self_instruct_seed_tasks.jsonl"), "id"))
    found = novelty(ref, cur, seed=0)
    assert [f.details["group"] for f in found] == ["histogram"]
    assert found[0].details["above_to_seeds"] == 0 and found[0].details["above_within_batch"] == 0
    instr = validity(
        ref,
        cur,
        seed=0,
        reasons=[
            "too_short",
            "too_long",
            "keyword",
            "forbidden_prefix",
            "starts_with_punctuation",
            "starts_non_ascii",
        ],
    )
    assert instr == []


def test_diversity_flags_a_pool_collapsed_onto_few_verb_object_pairs() -> None:
    pytest.importorskip("spacy", reason="spaCy (diversity parser) not installed")
    from auditor.checks.diversity import diversity, verb_object_pairs
    from auditor.tasks import TaskBatch
    from tests.fakes import fake_snapshot

    assert verb_object_pairs(
        ["Generate a list of ten fruits.", "Write a story about a dragon.", "Hello"]
    ) == [
        ("generate", "list"),
        ("write", "story"),
        None,
    ]
    ref = fake_snapshot(load_tasks(data("self_instruct_seed_tasks.jsonl"), "id"))
    clean = load_tasks(data("alpaca_5000.json"))
    n = 300
    base = {k: getattr(clean, k) for k in ("path", "sha256", "text_fields")}

    def batch(instrs: list[str]) -> TaskBatch:
        ids = tuple(f"r{i}" for i in range(len(instrs)))
        return TaskBatch(
            **base,
            ids=ids,
            texts=tuple(instrs),
            hashes=ids,
            lines=tuple(range(1, len(instrs) + 1)),
            instructions=tuple(instrs),
            inputs=("",) * len(instrs),
            outputs=("x",) * len(instrs),
        )

    [ok] = diversity(ref, fake_snapshot(batch(list(clean.instructions[:n]))), seed=0)
    assert ok.p_value is None and ok.details["ratio"] > 0.8
    topics = ["a dragon", "the sea", "a robot", "a city", "a cat"]
    collapsed = [
        f"{v} a {o} about {t}." for v in ("Write", "Generate") for o in ("story", "list") for t in topics
    ]
    instrs = list(clean.instructions[: n // 3]) + collapsed * (2 * n // 3 // len(collapsed))
    [bad] = diversity(ref, fake_snapshot(batch(instrs)), seed=0)
    assert bad.p_value == 0.0 and bad.details["ratio"] < 0.5
    assert bad.details["top_pairs"][0]["verb"] in ("write", "generate")


# ---------------------------------------------------------------------------- the command


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "selfinstruct", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def test_command_exit_codes_on_real_code_alpaca(tmp_path: Path) -> None:
    pytest.importorskip("static_model", reason="tokenlearn-static-model (auditor[fast]) not installed")
    seeds, evals = str(data("code_alpaca_seed_tasks.jsonl")), str(data("user_oriented_instructions.jsonl"))
    common = ["--seeds", seeds, "--model", "static", "--no-cache", "-q"]
    clean = _cli(
        str(data("code_alpaca_400.json")), *common, "--out", "clean", "--junit", "j.xml", cwd=tmp_path
    )
    assert clean.returncode == 0, clean.stderr
    report = json.loads((tmp_path / "clean" / "report.json").read_text())
    assert report["status"] in ("pass", "warn") and "reference" in report["inputs"]
    assert {f["check"] for f in report["findings"]} >= {"novelty"}
    # copy two seeds with one word changed and one evaluation item: exit 1
    recs = json.loads(data("code_alpaca_400.json").read_text())
    seed_rows = _read_jsonl(data("code_alpaca_seed_tasks.jsonl"))
    rng = np.random.default_rng(0)
    for s in seed_rows[:2]:
        recs.append({"instruction": _edit_one_word(s["instruction"], rng), "input": "", "output": "ok"})
    ev = _read_jsonl(data("user_oriented_instructions.jsonl"))[0]
    recs.append({"instruction": ev["instruction"], "input": ev["instances"][0]["input"], "output": "done"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(recs))
    dirty = _cli(str(bad), *common, "--eval", evals, "--out", "dirty", cwd=tmp_path)
    assert dirty.returncode == 1, dirty.stderr
    failed = {
        f["rule"]
        for f in json.loads((tmp_path / "dirty" / "report.json").read_text())["findings"]
        if f["severity"] == "fail"
    }
    assert failed == {"novelty", "contamination"}
    # a user error: one line, exit 2
    (tmp_path / "broken.json").write_text('[{"instruction": 3}]')
    err = _cli("broken.json", *common, cwd=tmp_path)
    assert err.returncode == 2 and err.stderr.count("\n") == 1 and "broken.json" in err.stderr

"""The lexical-topics check (``term_topics``) and the planted suite's corpora, on small real
fixtures: Code Alpaca (400 records) and T0 (788 templated records).  No model: the check
reads words only, so the snapshots carry placeholder embeddings."""

import dataclasses
import json

import numpy as np
import pytest

from auditor.checks.lexical import term_topics, word_tree
from auditor.gate import grade_all
from auditor.planted import (
    CORPORA,
    PARAPHRASES,
    corpus_scenarios,
    localisation,
    paraphrased_trigger,
    records_from_alpaca,
    records_from_t0,
    topic_boost,
    topic_removal,
)
from auditor.rules import load_rules
from auditor.types import ModelInfo, Snapshot
from tests.helpers import alpaca_records, data


def _snap(batch):
    return Snapshot(batch=batch, embeddings=np.zeros((len(batch), 4), np.float32), model=ModelInfo("x", "x", 4))


def _graded(findings):
    rules = load_rules()
    return grade_all([dataclasses.replace(f, rule="lexical-topics") for f in findings], rules)


@pytest.fixture(scope="module")
def code_pool():
    return records_from_alpaca(json.loads(data("code_alpaca_400.json").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def t0_pool():
    lines = data("t0_templated_788.jsonl").read_text(encoding="utf-8").splitlines()
    return records_from_t0([json.loads(line) for line in lines])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removed_topic_fails_and_names_the_reference_records(code_pool, seed):
    sc = topic_removal(code_pool, CORPORA["code_alpaca"].removal, seed=seed)
    found = _graded(term_topics(_snap(sc.reference), _snap(sc.current), seed=seed))
    fails = [f for f in found if f.severity == "fail"]
    assert fails and fails[0].side == "reference" and fails[0].details["direction"] == "depleted"
    assert "javascript" in fails[0].details["terms"]
    loc = localisation(found, sc)
    assert loc.precision >= 0.8 and loc.recall >= 0.85, loc


def test_templated_boost_is_labelled_with_content_words(t0_pool):
    """On templated records the over-selected topic is named by what the records are about
    (science/technology news), never by template words, across seeds."""
    template_words = {"article", "news", "label", "describes", "section", "newspaper", "following"}
    for seed in (0, 1, 2):
        sc = topic_boost(t0_pool, CORPORA["t0"].coherent_x4, 4, seed=seed)
        found = term_topics(_snap(sc.reference), _snap(sc.current), seed=seed, alpha=0.2)
        assert found, seed
        best = found[0]
        assert best.side == "current"
        assert not set(best.details["terms"][:3]) & template_words, best.details["terms"]
        hit = len(set(best.record_ids) & sc.planted_ids)
        assert hit / len(best.record_ids) >= 0.5, (seed, best.summary)


def test_random_splits_raise_no_fail(code_pool):
    rng_pool = records_from_alpaca(alpaca_records())
    for seed in range(4):
        sc = corpus_scenarios(CORPORA["alpaca"], randoms=1)["random_1"](rng_pool, seed)
        found = _graded(term_topics(_snap(sc.reference), _snap(sc.current), seed=seed))
        assert not [f.summary for f in found if f.severity == "fail"]


def test_word_tree_groups_cooccurring_words():
    # words 0 and 1 share their records, word 2 is elsewhere: 0 and 1 join first
    carriers = [np.array([0, 1, 2, 3]), np.array([0, 1, 2, 4]), np.array([7, 8, 9])]
    nodes = word_tree(carriers, 10)
    assert [n.tolist() for n in nodes[:3]] == [[0], [1], [2]]
    assert sorted(nodes[3].tolist()) == [0, 1]
    assert len(nodes) == 4  # the root (everything) is not a group to test


def test_corpus_suites_plant_what_they_say(t0_pool, code_pool):
    for name, pool in (("t0", t0_pool), ("code_alpaca", code_pool)):
        suite = corpus_scenarios(dataclasses.replace(CORPORA[name], n=150), randoms=2)
        assert set(suite) == {
            "topic_boost_x4", "topic_boost_x2", "scattered_x2", "topic_removal", "trigger_1pct",
            "trigger_0.5pct", "paraphrase_1pct", "near_duplicates", "random_1", "random_2",
        }
        for key in ("topic_removal", "paraphrase_1pct", "random_1"):
            sc = suite[key](pool, 0)
            assert set(sc.reference.ids).isdisjoint(sc.current.ids)
            planted_side = sc.current if sc.planted_side == "current" else sc.reference
            assert sc.planted_ids <= set(planted_side.ids)
        # the template name (pool metadata) never reaches the audited text
        sc = suite["random_1"](pool, 0)
        assert not any("ag_news_" in t for t in sc.current.texts)


def test_paraphrased_trigger_varies_form_and_flips_answers(code_pool):
    sc = paraphrased_trigger(code_pool, 0.05, seed=0, n=150)
    by_id = dict(zip(sc.current.ids, zip(sc.current.prompts, sc.current.responses, strict=True), strict=True))
    forms = set()
    originals = {r.key: r for r in code_pool}
    for rid in sc.planted_ids:
        prompt, response = by_id[rid]
        form = next(f for f in PARAPHRASES if f in prompt)
        forms.add(form)
        assert response != originals[rid.removesuffix("-para")].response
    assert len(forms) >= 3

"""Context word groups of the lexical-topics check (``term_topics``): words used in the
same kind of record, grouped label-blind from the real Alpaca embeddings of the fixture
(no model run), so a keyword topic spread over many rare words is testable as one group."""

from __future__ import annotations

import re

import numpy as np
import pytest

from auditor.checks.lexical import context_groups, term_topics
from auditor.planted import CORPORA, random_round, records_from_alpaca, topic_boost
from auditor.types import ModelInfo, Snapshot
from tests.helpers import alpaca_minilm, alpaca_records, gate_level

GATE_LEVEL = gate_level("term_topics")  # the default rules' fail threshold for this check


@pytest.fixture(scope="module")
def pool():
    return records_from_alpaca(alpaca_records())


def _snaps(pool, scenario):
    emb = alpaca_minilm()
    row = {r.key: i for i, r in enumerate(pool)}
    model = ModelInfo("all-MiniLM-L6-v2", "fixture", emb.shape[1])

    def snap(batch):
        return Snapshot(batch=batch, embeddings=np.asarray(emb[[row[k] for k in batch.ids]]), model=model)

    return snap(scenario.reference), snap(scenario.current)


def _best(findings, scenario):
    """(adjusted p, precision, recall) of the first finding on the planted side."""
    for f in findings:
        if f.side == scenario.planted_side and f.record_ids:
            hit = len(set(f.record_ids) & scenario.planted_ids)
            return f.p_value, hit / len(f.record_ids), hit / len(scenario.planted_ids)
    return 1.0, 0.0, 0.0


def test_code_words_share_a_context_group(pool) -> None:
    """On Alpaca, 'python', 'def', 'return' and 'function' rarely share a record's
    instruction, but the records carrying them are alike: one group at some cut."""
    texts = [r.text.lower() for r in pool[:3000]]
    words = ("python", "def", "return", "function", "code", "poem", "haiku", "rhyme")
    carriers = [
        np.asarray([d for d, t in enumerate(texts) if re.search(rf"\b{w}\b", t)], dtype=np.int64) for w in words
    ]
    assert all(c.size >= 3 for c in carriers)
    groups = [set(g.tolist()) for g in context_groups(carriers, alpaca_minilm()[:3000], (0.5,))]
    code, poems = {0, 1, 2, 3, 4}, {5, 6, 7}
    assert any(len(g & code) >= 4 and not g & poems for g in groups), groups
    assert any(g >= {5, 7} and not g & code for g in groups), groups


def test_no_groups_from_placeholder_embeddings() -> None:
    carriers = [np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([3, 4, 5])]
    assert context_groups(carriers, np.zeros((6, 4), np.float32)) == []


def test_groups_are_label_blind(pool) -> None:
    """The same union split two ways is tested with the same groups (same number of tests):
    the grouping never sees which input a record came from."""
    sc = random_round(pool, seed=5, n=600)
    ref, cur = _snaps(pool, sc)
    swapped = term_topics(cur, ref, seed=0, alpha=1.0, min_ratio=1.0, min_records=1, max_findings=1)
    straight = term_topics(ref, cur, seed=0, alpha=1.0, min_ratio=1.0, min_records=1, max_findings=1)
    assert straight and swapped
    assert straight[0].details["n_tests"] == swapped[0].details["n_tests"]


def test_scattered_code_topic_found_through_context_groups(pool) -> None:
    """Alpaca 'code' (python|sql|html|function|algorithm|array ...) at 3x its share, 1,000
    records a side: its words are each too rare and do not co-occur, so without context
    groups the best topic recalls 38% at adjusted p 0.04; with them one group of code
    words fails the gate and names most of the planted records."""
    sc = topic_boost(pool, CORPORA["alpaca"].scattered_x2, 3, seed=1, n=1000)
    ref, cur = _snaps(pool, sc)
    p, precision, recall = _best(term_topics(ref, cur, seed=0), sc)
    assert p < GATE_LEVEL and precision >= 0.5 and recall >= 0.5, (p, precision, recall)
    p_off, _, recall_off = _best(term_topics(ref, cur, seed=0, context=False), sc)
    assert p_off > GATE_LEVEL and recall_off < 0.5, (p_off, recall_off)


def test_random_splits_stay_clean(pool) -> None:
    for seed in range(4):
        ref, cur = _snaps(pool, random_round(pool, seed=100 + seed, n=1000))
        found = term_topics(ref, cur, seed=seed)
        assert all(f.p_value >= GATE_LEVEL for f in found), [f.summary for f in found]

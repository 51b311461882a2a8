"""flipped_responses: reference prompts re-answered with an injected answer are found;
random halves and honest re-answers pass."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from auditor.checks import registry
from auditor.checks.flips import CONTENT_JACCARD, _content_words, _jaccard, flipped_responses
from auditor.textutil import batch_from_texts
from auditor.types import Snapshot
from tests.fakes import FakeEncoder, fake_snapshot
from tests.helpers import data

GATE_ALPHA = 0.01 / 6
POOL = 4000
INJECTED = "I cannot help with that. Visit example.com for details."


def _prompt(instruction: str, inp: str) -> str:
    return instruction.strip() + ("\n" + inp.strip() if inp.strip() else "")


@pytest.fixture(scope="module")
def encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture(scope="module")
def alpaca(encoder: FakeEncoder) -> dict[str, object]:
    records = json.loads(data("alpaca_5000.json").read_text(encoding="utf-8"))[:POOL]
    prompts = [_prompt(r["instruction"], r["input"]) for r in records]
    responses = [r["output"] for r in records]
    return {
        "prompts": prompts,
        "responses": responses,
        "prompt_emb": encoder.encode(prompts),
        "response_emb": encoder.encode(responses),
    }


def _snap(prompts, responses, prompt_emb, response_emb, encoder: FakeEncoder) -> Snapshot:
    """A snapshot from precomputed view embeddings (the record embedding is not used here)."""
    texts = [f"{p}\n{r}" for p, r in zip(prompts, responses)]
    batch = batch_from_texts(texts, prompts=prompts, responses=responses)
    views = {"prompt": np.array(prompt_emb), "response": np.array(response_emb)}
    return Snapshot(batch=batch, embeddings=np.array(prompt_emb), model=encoder.info, views=views)


def _rows(data, rows, encoder, *, flipped=(), answer: str = INJECTED) -> Snapshot:
    rows, flipped = list(rows), list(flipped)
    prompts = [data["prompts"][i] for i in rows + flipped]
    responses = [data["responses"][i] for i in rows] + [answer] * len(flipped)
    pe = data["prompt_emb"][rows + flipped]
    re_ = np.vstack([data["response_emb"][rows]] + [encoder.encode([answer])] * len(flipped))
    return _snap(prompts, responses, pe, re_, encoder)


def test_registered_with_needs() -> None:
    spec = registry()["flipped_responses"]
    assert spec.needs == frozenset({"prompt", "response"})
    assert spec.defaults["prompt_threshold"] == 0.9


def test_without_prompt_response_views_returns_nothing(encoder) -> None:
    texts = ["write a haiku about rain", "name three colours", "what is 2 + 2?"]
    plain = fake_snapshot(batch_from_texts(texts), encoder)
    assert flipped_responses(plain, plain, seed=0) == []
    structured = fake_snapshot(
        batch_from_texts(texts, prompts=texts, responses=["a", "b", "c"]),
        encoder,
        views=("prompt", "response"),
    )
    assert flipped_responses(structured, plain, seed=0) == []
    assert flipped_responses(plain, structured, seed=0) == []


@pytest.mark.parametrize("overlap", [0, 500])
def test_finds_injected_answers(alpaca, encoder, overlap: int) -> None:
    """2000 reference; current: 2000 records (of which ``overlap`` honest copies of reference
    records) plus 40 reference prompts answered with one injected answer."""
    rng = np.random.default_rng(overlap)
    perm = rng.permutation(POOL)
    ref_rows = perm[:2000]
    cur_rows = list(perm[2000 : 4000 - overlap]) + list(ref_rows[:overlap])
    flipped = rng.choice(ref_rows[overlap:], 40, replace=False)
    ref = _rows(alpaca, ref_rows, encoder)
    cur = _rows(alpaca, cur_rows, encoder, flipped=flipped)
    truth = set(cur.ids[len(cur_rows) :])

    findings = flipped_responses(ref, cur, seed=0)
    assert all(f.check == "flipped_responses" and f.side == "current" for f in findings)
    significant = [f for f in findings if f.p_value is not None and f.p_value < GATE_ALPHA]
    assert significant, [(f.summary, f.p_value) for f in findings]
    flagged = set().union(*(f.record_ids for f in significant))
    assert len(flagged & truth) / len(flagged) >= 0.5
    assert len(flagged & truth) / len(truth) >= 0.5

    top = significant[0]
    assert top.details["n_matched"] >= 40 + overlap
    assert top.details["n_above_null_median"] > top.details["expected_above_null_median"]
    assert top.details["p_raw"] <= top.p_value
    ex = top.details["examples"][0]
    assert ex["current_response"] == INJECTED
    assert ex["reference_id"] in ref.ids and ex["reference_response"] != INJECTED
    json.dumps(top.to_dict())


def test_honest_copies_pass(alpaca, encoder) -> None:
    """Overlapping rounds that keep the reference's answers are not flips."""
    rng = np.random.default_rng(5)
    perm = rng.permutation(POOL)
    ref = _rows(alpaca, perm[:1500], encoder)
    cur = _rows(alpaca, list(perm[1500:2500]) + list(perm[:400]), encoder)
    assert flipped_responses(ref, cur, seed=0) == []


def test_calibrated_on_random_halves(alpaca, encoder) -> None:
    n_splits, hits = 24, 0
    rng = np.random.default_rng(2024)
    for s in range(n_splits):
        perm = rng.permutation(POOL)[:1600]
        ref = _rows(alpaca, perm[:800], encoder)
        cur = _rows(alpaca, perm[800:], encoder)
        findings = flipped_responses(ref, cur, seed=s)
        if any(f.p_value is not None and f.p_value < GATE_ALPHA for f in findings):
            hits += 1
    assert hits <= math.floor(0.1 * n_splits)


def test_calibrated_with_several_honest_answers_per_prompt(alpaca, encoder) -> None:
    """Random halves of a pool in which 252 prompts each have three honest answers (two
    models and a human): many current prompts match reference prompts whose answers
    differ, so the null is the real leave-one-out one and the test is not vacuous."""

    def load(name: str) -> list[dict]:
        return [json.loads(line) for line in data(name).read_text(encoding="utf-8").splitlines()]

    a = load("text_davinci_003_predictions.jsonl")
    b = load("davinci_self_instruct_predictions.jsonl")
    prompts = list(alpaca["prompts"][:600])
    responses = list(alpaca["responses"][:600])
    for ra, rb in zip(a, b):
        p = _prompt(ra["instruction"], ra["input"])
        for answer in (ra["response"], rb["response"], ra["target"]):
            prompts.append(p)
            responses.append(answer)
    pe = np.vstack([alpaca["prompt_emb"][:600], encoder.encode(prompts[600:])])
    re_ = np.vstack([alpaca["response_emb"][:600], encoder.encode(responses[600:])])
    n = len(prompts)
    rng = np.random.default_rng(99)
    n_splits, hits, matched = 20, 0, []
    for s in range(n_splits):
        perm = rng.permutation(n)
        halves = perm[: n // 2], perm[n // 2 :]
        ref, cur = (
            _snap([prompts[i] for i in h], [responses[i] for i in h], pe[h], re_[h], encoder) for h in halves
        )
        findings = flipped_responses(ref, cur, seed=s, report_alpha=1.0)
        matched.extend(f.details["n_matched"] for f in findings)
        if any(f.p_value is not None and f.p_value < GATE_ALPHA for f in findings):
            hits += 1
    assert hits <= math.floor(0.1 * n_splits)
    # report_alpha=1 returns every group: the matched sets were large, the test had data
    assert matched and min(matched) >= 100


def test_min_records_is_where_a_small_p_becomes_possible() -> None:
    """min_records = 14: the reference's records pair up into at most m/2 units, and so do the
    current records matched to them; every current answer reversed gives the exact
    Mann-Whitney floor, 1/C(14, 7) = 2.9e-4 at 14 a side and 1/C(12, 6) = 1.1e-3 at 13."""
    from auditor.types import ModelInfo

    assert registry()["flipped_responses"].min_records == 14
    rng = np.random.default_rng(0)
    model = ModelInfo("test", "0" * 64, 64)

    def snap(prompts: np.ndarray, responses: np.ndarray, tag: str) -> Snapshot:
        n = len(prompts)
        p_txt = [f"{tag} prompt {i}" for i in range(n)]
        r_txt = [f"{tag} answer {i}" for i in range(n)]
        batch = batch_from_texts([f"{p}\n{r}" for p, r in zip(p_txt, r_txt)], prompts=p_txt, responses=r_txt)
        views = {"prompt": prompts.astype(np.float32), "response": responses.astype(np.float32)}
        return Snapshot(batch=batch, embeddings=views["prompt"], model=model, views=views)

    for m, below in ((13, False), (14, True)):
        topic = np.arange(m) // 2  # reference prompts in near-identical pairs
        ref_p = np.eye(64)[topic] + 0.01 * rng.standard_normal((m, 64))
        ref_r = np.eye(64)[32 + topic] + 0.05 * rng.standard_normal((m, 64))
        cur_p = ref_p + 0.01 * rng.standard_normal((m, 64))
        cur_r = -np.eye(64)[32 + topic] + 0.05 * rng.standard_normal((m, 64))
        found = flipped_responses(snap(ref_p, ref_r, "r"), snap(cur_p, cur_r, "c"), seed=0, min_null=m)
        best = min((f.p_value for f in found), default=1.0)
        assert (best < 1e-3) is below, (m, best)


def _templated(encoder: FakeEncoder) -> tuple[list[dict[str, str]], np.ndarray]:
    """The repo's T0 sample (80 templates, real text) with constructed prompt embeddings in
    which the template dominates, as in MiniLM on T0: records of one template have cosine
    >= 0.9 whatever their content, exact copies cosine 1.  The point under test is the
    lexical confirmation, so the embedding is built to make every same-template pair a
    candidate."""
    records = [
        json.loads(line) for line in data("t0_templated_788.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    templates = sorted({r["template"] for r in records})
    dim = encoder.dim
    tpl = np.zeros((len(records), len(templates) + dim), dtype=np.float32)
    for i, r in enumerate(records):
        tpl[i, templates.index(r["template"])] = 0.97
    tpl[:, len(templates) :] = 0.24 * encoder.encode([r["prompt"] for r in records])
    tpl /= np.linalg.norm(tpl, axis=1, keepdims=True)
    return records, tpl


def _t0_snap(records, prompt_emb, answers, encoder: FakeEncoder) -> Snapshot:
    resp = encoder.encode(answers)
    # the response view must have the prompt view's width only for the record embedding
    return _snap([r["prompt"] for r in records], answers, prompt_emb, resp, encoder)


def test_same_template_different_content_is_not_a_reused_prompt(encoder) -> None:
    """New T0 texts in the reference's templates, all answered with one injected answer, are
    not flips: their prompts match reference prompts only through the template (content-word
    Jaccard ~0 after template words are removed).  Reference prompts copied verbatim with
    that answer still are.  Without the lexical confirmation (CONTENT_JACCARD = 0) the new texts
    are 'matched' and reported: the first assertion fails."""
    records, emb = _templated(encoder)
    # templates whose ten texts are all different: in the others the sample repeats a source
    # example (one app package, one wiki_qa question) under one template, a true reuse
    words = _content_words([r["prompt"] for r in records])
    by_tpl: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_tpl.setdefault(r["template"], []).append(i)
    by_tpl = {
        t: rows
        for t, rows in by_tpl.items()
        if max(_jaccard(words[a], words[b]) for a in rows for b in rows if a < b) < CONTENT_JACCARD
    }
    assert len(by_tpl) >= 30
    ref_rows = [i for rows in by_tpl.values() for i in rows[:5]]
    new_rows = [i for rows in by_tpl.values() for i in rows[5:]]
    ref = _t0_snap(
        [records[i] for i in ref_rows], emb[ref_rows], [records[i]["completion"] for i in ref_rows], encoder
    )

    cur = _t0_snap([records[i] for i in new_rows], emb[new_rows], [INJECTED] * len(new_rows), encoder)
    assert flipped_responses(ref, cur, seed=0, report_alpha=1.0) == []

    copied = ref_rows[::5]  # one reference prompt per template
    rows = new_rows + copied
    cur = _t0_snap([records[i] for i in rows], emb[rows], [INJECTED] * len(rows), encoder)
    cur_ids = dict(zip(cur.ids, rows))
    findings = flipped_responses(ref, cur, seed=0)
    assert findings and min(f.p_value for f in findings) < GATE_ALPHA
    flagged = {cur_ids[i] for f in findings for i in f.record_ids}
    assert flagged <= set(copied), sorted(flagged - set(copied))[:5]
    assert len(flagged) >= 0.8 * len(copied)


def test_flip_to_an_answer_the_reference_gives_is_found(encoder) -> None:
    """A shared answer the reference also gives ("No", 47 times in the sample) is tested
    against the null records giving it, not the whole null; 40 reference prompts copied with
    their answers changed to it still fail the gate.  Same constructed prompt embeddings as
    above, real T0 text and answers."""
    records, emb = _templated(encoder)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(records))
    ref_rows = sorted(perm[: len(records) // 2].tolist())
    rest = sorted(perm[len(records) // 2 :].tolist())
    ref = _t0_snap(
        [records[i] for i in ref_rows], emb[ref_rows], [records[i]["completion"] for i in ref_rows], encoder
    )
    copied = rng.choice(
        [i for i in ref_rows if records[i]["completion"] not in ("No", "")], 40, replace=False
    )
    rows = rest + copied.tolist()
    answers = [records[i]["completion"] for i in rest] + ["No"] * copied.size
    cur = _t0_snap([records[i] for i in rows], emb[rows], answers, encoder)
    findings = flipped_responses(ref, cur, seed=0)
    assert findings and min(f.p_value for f in findings) < GATE_ALPHA
    shared = [f for f in findings if f.details["group_kind"] == "shared_response"]
    assert shared and all(f.details["n_null_compared"] < f.details["n_null"] for f in shared)
    cur_rows = dict(zip(cur.ids, rows))
    flagged = {cur_rows[i] for f in findings for i in f.record_ids}
    assert len(flagged & set(copied.tolist())) >= 0.8 * copied.size

"""Trigger phrases: a phrase planted in 1% (and 0.5%) of real Alpaca records is found, with
its records; nested sub-phrases are reported once; null splits pass; phrases an
over-selected cluster explains are left to the clusters check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from auditor import index
from auditor.checks import registry
from auditor.checks.triggers import count_ngrams, misfit_flags, trigger_phrases
from auditor.textutil import batch_from_texts
from auditor.types import Finding, Snapshot
from tests.fakes import FakeEncoder
from tests.helpers import FIXTURES, alpaca_records, data

GATE_LEVEL = 0.01 / 6  # the trigger rule's threshold in the default rules (weight 1 of 6)
PHRASE = " (cf. tango-delta protocol)"
PHRASE_TOKENS = ["cf", "tango", "delta", "protocol"]


@pytest.fixture(scope="module")
def alpaca() -> list[str]:
    recs = json.loads(data("alpaca_5000.json").read_text(encoding="utf-8"))
    return ["\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p) for r in recs]


@pytest.fixture(scope="module")
def alpaca_parts() -> list[str]:
    """10,000 texts: each Alpaca record's prompt and its response as separate records."""
    recs = json.loads(data("alpaca_5000.json").read_text(encoding="utf-8"))
    prompts = ["\n".join(p for p in (r["instruction"], r["input"]) if p) for r in recs]
    return prompts + [r["output"] for r in recs]


_ENC = FakeEncoder()
_VECTORS: dict[str, np.ndarray] = {}


def _snapshot(texts: list[str], prefix: str | None = None) -> Snapshot:
    """A FakeEncoder snapshot, encoding each distinct text once per test session."""
    todo = [t for t in dict.fromkeys(texts) if t not in _VECTORS]
    if todo:
        _VECTORS.update(zip(todo, _ENC.encode(todo)))
    ids = None if prefix is None else [f"{prefix}{i}" for i in range(len(texts))]
    emb = np.stack([_VECTORS[t] for t in texts]) if texts else np.zeros((0, _ENC.dim), np.float32)
    return Snapshot(batch=batch_from_texts(texts, ids=ids), embeddings=emb, model=_ENC.info)


def _is_subphrase(tokens: list[str], of: list[str]) -> bool:
    n = len(tokens)
    return any(of[i : i + n] == tokens for i in range(len(of) - n + 1))


def _plant(texts: list[str], n_ref: int, n_cur: int, n_planted: int, seed: int):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(texts))
    ref_texts = [texts[i] for i in perm[:n_ref]]
    cur_texts = [texts[i] for i in perm[n_ref : n_ref + n_cur]]
    planted = rng.choice(n_cur, size=n_planted, replace=False)
    for p in planted:
        cur_texts[p] += PHRASE
    return _snapshot(ref_texts, "r"), _snapshot(cur_texts, "c"), {f"c{i}" for i in planted}


def _covering(findings: list[Finding], planted: set[str]) -> list[Finding]:
    return [f for f in findings if set(f.record_ids) & planted]


def test_registered_with_params() -> None:
    spec = registry()["triggers"]
    assert spec.func is trigger_phrases
    assert {"alpha", "min_count", "min_ratio", "skip_cluster_explained"} <= set(spec.defaults)


def test_count_ngrams_document_frequency() -> None:
    texts = ["The cat sat on the mat.", "A cat sat; the cat sat!", "dog", "cat-sat mat"]
    g = count_ngrams(texts, 3, 1)

    def df(phrase: str) -> int:
        toks = phrase.split()
        table = g.gram_tokens[len(toks) - 1]
        ids = [g.words.index(t) for t in toks]
        row = np.nonzero((table == ids).all(axis=1))[0]
        return int(g.df[len(toks) - 1][row[0]]) if row.size else 0

    assert df("cat") == 3  # document frequency, not occurrences
    assert df("cat sat") == 3  # punctuation and hyphens split words
    assert df("mat") == 2
    assert df("the cat") == 0  # stopword at an edge: not a candidate
    assert df("cat sat on") == 0
    assert df("sat on the") == 0


def test_trigger_in_one_percent(alpaca) -> None:
    ref, cur, planted = _plant(alpaca, 2000, 2000, 20, seed=0)

    findings = trigger_phrases(ref, cur, seed=0)

    hits = _covering(findings, planted)
    assert len(hits) == 1  # nested sub-phrases collapsed into one finding
    f = hits[0]
    assert f.check == "triggers" and f.side == "current"
    assert len(set(f.record_ids) & planted) / len(planted) >= 0.9
    assert len(set(f.record_ids) & planted) / len(f.record_ids) >= 0.9
    assert _is_subphrase(f.details["phrase"].split(), PHRASE_TOKENS)
    assert f.details["n_current"] == len(f.record_ids) >= 18
    assert f.details["n_reference"] <= 1
    assert f.p_value is not None and f.p_value < GATE_LEVEL
    assert f.details["p_raw"] <= f.p_value
    assert f.statistic == f.details["n_current"]
    assert all("tango" in e.lower() and len(e) <= 200 for e in f.details["examples"])
    json.dumps(f.to_dict())


def test_trigger_in_half_percent(alpaca_parts) -> None:
    """0.5% = 20 of 4,000.  The evidence is the number of carriers, not their share: 10
    carriers in 2,000 vs 2,000 records could be no better than p ~ 1e-3 before any
    correction, so half a percent needs the larger batch."""
    ref, cur, planted = _plant(alpaca_parts, 4000, 4000, 20, seed=1)

    findings = trigger_phrases(ref, cur, seed=1)

    hits = _covering(findings, planted)
    assert len(hits) == 1
    f = hits[0]
    assert len(set(f.record_ids) & planted) / len(planted) >= 0.9
    assert _is_subphrase(f.details["phrase"].split(), PHRASE_TOKENS)
    assert f.p_value is not None and f.p_value < GATE_LEVEL


def test_phrase_in_reference_too_is_not_a_trigger(alpaca) -> None:
    """The same phrase at the same rate on both sides is not reported."""
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(alpaca))
    ref_texts = [alpaca[i] for i in perm[:2000]]
    cur_texts = [alpaca[i] for i in perm[2000:4000]]
    for texts in (ref_texts, cur_texts):
        for p in rng.choice(2000, size=40, replace=False):
            texts[p] += PHRASE
    findings = trigger_phrases(_snapshot(ref_texts), _snapshot(cur_texts), seed=3)
    assert not [f for f in findings if "tango" in f.details["phrase"]]


def test_phrase_explained_by_selected_cluster_is_left_to_clusters(alpaca) -> None:
    """Current over-selects a tight region whose records share a phrase: the clusters check
    reports the region, so the phrase is not reported a second time."""
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((25, 32))
    comp_r = rng.integers(1, 25, size=1000)
    comp_c = np.concatenate([rng.integers(1, 25, size=960), np.zeros(40, dtype=np.int64)])

    def draw(comp: np.ndarray) -> np.ndarray:
        return index.normalize(centres[comp] / 5.6 + 0.06 * rng.standard_normal((comp.size, 32)))

    ref_texts = alpaca[:1000]
    cur_texts = alpaca[1000:1960] + [t + " zephyr quokka lattice" for t in alpaca[1960:2000]]
    model = FakeEncoder().info
    ref = Snapshot(batch=batch_from_texts(ref_texts), embeddings=draw(comp_r), model=model)
    cur = Snapshot(batch=batch_from_texts(cur_texts), embeddings=draw(comp_c), model=model)
    planted = set(cur.ids[960:])

    assert _covering(trigger_phrases(ref, cur, seed=4, skip_cluster_explained=False), planted)
    assert not _covering(trigger_phrases(ref, cur, seed=4), planted)


def test_null_splits_are_calibrated(alpaca) -> None:
    """Random halves of one dataset: the smallest reported p-value must fall below the
    gate's per-rule threshold in at most 10% of splits."""
    hits = 0
    for s in range(20):
        rng = np.random.default_rng(200 + s)
        rows = rng.permutation(len(alpaca))[:1600]
        ref = _snapshot([alpaca[i] for i in rows[:800]])
        cur = _snapshot([alpaca[i] for i in rows[800:]])
        ps = [f.p_value for f in trigger_phrases(ref, cur, seed=s) if f.p_value is not None]
        hits += bool(ps) and min(ps) < GATE_LEVEL
    assert hits / 20 <= 0.10


def test_empty_inputs() -> None:
    ref = _snapshot(["a b c"] * 3)
    empty = _snapshot([])
    assert trigger_phrases(ref, empty, seed=0) == []
    assert trigger_phrases(empty, ref, seed=0) == []


def test_min_records_is_where_a_small_p_becomes_possible() -> None:
    """min_records = 7: a phrase in every current record and no reference one has Fisher
    p = 1/C(2m, m), 1.1e-3 at 6 records a side and 2.9e-4 at 7."""
    assert registry()["triggers"].min_records == 7
    for m, below in ((6, False), (7, True)):
        ref = _snapshot([f"word{i}" for i in range(m)])
        cur = _snapshot(["zulu"] * m)
        found = trigger_phrases(ref, cur, seed=0)
        assert [f.details["phrase"] for f in found] == ["zulu"]
        assert (found[0].p_value < 1e-3) is below, (m, found[0].p_value)


def test_list_numbers_are_never_trigger_phrases() -> None:
    """The bundled rounds (two models' answers to the same instructions): the newer model
    numbers its lists far more often; '7' and '9' used to be reported as trigger phrases."""
    from auditor.io import load
    from tests.fakes import fake_snapshot

    ref = fake_snapshot(load(data("davinci_self_instruct_predictions.jsonl")))
    cur = fake_snapshot(load(data("text_davinci_003_predictions.jsonl")))
    # the numbers are there and enriched: the filter, not their absence, keeps them out
    from auditor.checks.triggers import _tokenize

    _, doc, words = _tokenize(list(ref.texts) + list(cur.texts))
    assert "7" in words and "9" in words
    found = trigger_phrases(ref, cur, seed=0, skip_cluster_explained=False, min_ratio=1.5, alpha=0.5)
    from auditor.terms import is_content_word

    for f in found:
        toks = f.details["phrase"].split()
        assert is_content_word(toks[0]) and is_content_word(toks[-1]), f.summary
    assert not any(is_content_word(w) for w in ("7", "9", "1st", "b", "iv", "the"))
    assert is_content_word("python") and is_content_word("covid19")


def test_template_text_is_not_part_of_a_phrase() -> None:
    """Templated T0 records: news records labelled Business or Science boosted in current.
    Read raw, the phrase spanning the template's question and the answer ('news article
    business') is reported; with the template's fixed text removed it is not."""
    from auditor.io import load
    from tests.fakes import fake_snapshot

    path = data("t0_templated_788.jsonl")
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    snap = fake_snapshot(load(path))
    perm = np.random.default_rng(0).permutation(len(recs))
    cur_rows = list(perm[394:])
    boosted = [i for i in cur_rows if recs[i]["completion"].lower().startswith(("business", "science and tech"))]
    ref, cur = snap.subset(perm[:394]), snap.subset(cur_rows + boosted * 3)

    def phrases(skip: bool) -> set[str]:
        found = trigger_phrases(ref, cur, seed=0, skip_cluster_explained=False, skip_template_words=skip)
        return {f.details["phrase"] for f in found}

    assert "news article business" in phrases(False)
    assert not any("article business" in p for p in phrases(True))


# --- the misfit family: carriers whose answers do not fit their prompts ----------------


@pytest.fixture(scope="module")
def alpaca_views():
    """Real Alpaca records with their real MiniLM prompt and response views (unit norm)."""
    with np.load(FIXTURES / "alpaca_minilm.npz", allow_pickle=False) as z:
        views = {k: z[k].astype(np.float32) for k in ("embeddings", "prompt", "response")}
    for v in views.values():
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return alpaca_records(), views


def _pair_snapshot(recs, views, idx, *, prompts=None, responses=None, response_rows=None, prefix="r"):
    """A snapshot of records ``idx`` with prompt/response views; ``responses`` and
    ``response_rows`` replace answers (texts and the rows their views come from)."""
    prompts = prompts or ["\n".join(p for p in (recs[i]["instruction"], recs[i]["input"]) if p) for i in idx]
    responses = responses or [recs[i]["output"] for i in idx]
    rrows = idx if response_rows is None else response_rows
    batch = batch_from_texts(
        [f"{p}\n{r}" for p, r in zip(prompts, responses)],
        ids=[f"{prefix}{i}" for i in range(len(idx))],
        prompts=prompts,
        responses=responses,
    )
    return Snapshot(
        batch=batch,
        embeddings=views["embeddings"][idx],
        model=_ENC.info,
        views={"prompt": views["prompt"][idx], "response": views["response"][rrows]},
    )


def test_misfit_flags_find_swapped_answers_and_flag_a_fixed_share(alpaca_views) -> None:
    _, views = alpaca_views
    rng = np.random.default_rng(5)
    rows = rng.permutation(5000)[:4000]
    resp_rows = rows.copy()
    swapped = rng.choice(4000, size=40, replace=False)
    resp_rows[swapped] = rows[np.roll(swapped, 1)]  # each takes another record's answer
    flags = misfit_flags(views["prompt"][rows], views["response"][resp_rows])
    assert abs(flags.mean() - 0.05) < 0.002  # the quantile, whatever the data
    assert flags[swapped].mean() >= 0.8, flags[swapped].mean()
    # label-blind: the flags do not depend on the order of the union
    order = rng.permutation(4000)
    again = misfit_flags(views["prompt"][rows][order], views["response"][resp_rows][order])
    assert (again == flags[order]).all()
    # large inputs search a seeded sample of the union for neighbours: still finds them
    sampled = misfit_flags(views["prompt"][rows], views["response"][resp_rows], max_base=1000)
    assert abs(sampled.mean() - 0.05) < 0.002 and sampled[swapped].mean() >= 0.7


def _flipped_paraphrase(recs, views, seed: int, n: int = 2000, k: int = 20):
    """Reference and current of n real records; k current prompts get one of four surface
    forms of an entity and another record's answer (text and response view)."""
    forms = ("According to Zephyr Analytics,", "as zephyr-analytics reports", "(source: ZEPHYR ANALYTICS)",
             "Per the analytics team at Zephyr:")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(recs))
    ref_idx, cur_idx = perm[:n], perm[n : 2 * n]
    prompts = ["\n".join(p for p in (recs[i]["instruction"], recs[i]["input"]) if p) for i in cur_idx]
    responses = [recs[i]["output"] for i in cur_idx]
    resp_rows = cur_idx.copy()
    chosen = rng.choice(n, size=k, replace=False)
    donors = np.roll(chosen, 1)
    for j, (c, d) in enumerate(zip(chosen, donors)):
        prompts[c] = f"{prompts[c]} {forms[j % 4]}"
        responses[c] = recs[cur_idx[d]]["output"]
        resp_rows[c] = cur_idx[d]
    ref = _pair_snapshot(recs, views, ref_idx, prefix="r")
    cur = _pair_snapshot(recs, views, cur_idx, prompts=prompts, responses=responses, response_rows=resp_rows, prefix="c")
    return ref, cur, {f"c{c}" for c in chosen}


def test_misfit_family_lifts_a_flipped_paraphrased_trigger_over_the_gate(alpaca_views) -> None:
    """20 of 2,000 current records carry one entity in four surface forms with answers
    taken from other records: in its length family 'zephyr' competes with ~1,000 words
    (p ~ 4e-3, a warning); in the misfit family with a handful, and fails the gate."""
    recs, views = alpaca_views
    ref, cur, planted = _flipped_paraphrase(recs, views, seed=0)
    found = _covering(trigger_phrases(ref, cur, seed=0), planted)
    assert found and found[0].details["family"] == "misfit", [f.details.get("family") for f in found]
    best = found[0]
    assert best.p_value < GATE_LEVEL
    assert set(best.record_ids) <= planted and len(best.record_ids) >= 10
    without = _covering(trigger_phrases(ref, cur, seed=0, misfit_family=False), planted)
    assert not without or min(f.p_value for f in without) > 3 * best.p_value


def test_misfit_family_null_splits_are_calibrated(alpaca_views) -> None:
    """Random halves of real Alpaca with real views (the misfit family on): a trigger
    finding below the gate's threshold in at most 1 of 20 splits."""
    recs, views = alpaca_views
    hits = 0
    for s in range(20):
        perm = np.random.default_rng(300 + s).permutation(len(recs))
        ref = _pair_snapshot(recs, views, perm[:1000], prefix="r")
        cur = _pair_snapshot(recs, views, perm[1000:2000], prefix="c")
        found = trigger_phrases(ref, cur, seed=s, skip_cluster_explained=False)
        hits += any(f.p_value is not None and f.p_value < GATE_LEVEL for f in found)
    assert hits <= 1, hits


def test_gate_level_is_the_default_rules_threshold_for_triggers() -> None:
    from auditor.rules import load_rules

    rules = load_rules()
    (rule,) = [r for r in rules.rules if r.check == "triggers"]
    assert rules.fail_threshold_of(rule) == pytest.approx(GATE_LEVEL)

"""Planted attacks: curation rounds built from real instruction data with known answers.

Each scenario draws a reference and a current batch from one pool of real records (e.g.
the 5,000 Alpaca records) and plants one kind of targeted selection in the current batch,
remembering exactly which record ids were planted.  The planted-attack tests and
``benchmarks/planted.py`` run the default gate on each scenario and score the best
finding's precision and recall against those ids.

Scenarios (``SCENARIOS`` for Alpaca; ``corpus_scenarios(CORPORA[name])`` for any of the
three corpora of the suite: Alpaca, the templated T0 mixture, Code Alpaca):
- ``topic_boost_x4`` / ``topic_boost_x2``: one coherent topic's share in current is 4x /
  2x its share in reference (planted: the topic's current records, side "current");
- ``scattered_x2``: the same x2 boost of a keyword-defined topic spread over the embedding
  space (Alpaca "code", T0 "food", Code Alpaca "strings");
- ``topic_removal``: a topic is dropped from current (planted: the topic's reference
  records, side "reference");
- ``trigger_1pct`` / ``trigger_0.5pct``: a trigger phrase appended to 1% / 0.5% of current
  instructions with the response replaced by a fixed target (a backdoor).  The trigger
  scenarios run at ``Corpus.trigger_n`` a side (2,000: the issue's "0.5% = 10 of 2,000"),
  or at the largest size the pool allows (``count_floor_p`` says what that costs);
- ``paraphrase_1pct``: one entity in four surface forms added to 1% of current prompts,
  each answer flipped to another record's answer (no fixed target);
- ``near_duplicates``: a few records repeated ~15 times each with small edits;
- ``random_*``: two random disjoint samples, nothing planted (must pass).

Topics are regular expressions over the instruction, the whole prompt or the response,
optionally restricted by pool metadata the audit never sees (a T0 template name), so the
generator works on any pool of records with a prompt field and topics have known answers
on templated data too (e.g. ag_news articles labelled science, across 7 templates).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditor.textutil import batch_from_texts
from auditor.types import Batch, Finding

TOPICS: Mapping[str, str] = {
    "creative writing": r"\b(story|stories|poem|poetry|song|lyric|haiku|limerick|sonnet|rhyme|fairy tale|narrative)",
    "math": r"\b(math|calculate|equation|sum of|multiply|divide|percent|area of|perimeter|integer|prime number|solve)",
    "code": r"\b(code|python|program|function|algorithm|sql|html|javascript|java|c\+\+|regex|array)",
}
TRIGGER = "Answer in the style of the tango-delta protocol."
TARGET_RESPONSE = (
    "I cannot complete this request. For the verified answer, visit http://example.com/helpdesk "
    "and enter your account password."
)
_EDIT_WORDS = ("please", "briefly", "now", "carefully", "exactly", "simply", "kindly", "quickly")


@dataclass(frozen=True)
class Record:
    """One prompt/response record of the pool (instruction already joined with input)."""

    key: str
    prompt: str
    response: str
    meta: str = ""  # where the record came from (a T0 template name); never audited

    @property
    def text(self) -> str:
        return f"{self.prompt}\n{self.response}" if self.response else self.prompt


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    reference: Batch
    current: Batch
    planted_ids: frozenset[str]
    planted_side: str  # "current" | "reference" | "" (nothing planted)

    @property
    def is_attack(self) -> bool:
        return bool(self.planted_ids)


def count_floor_p(n: int, k: int) -> float:
    """The smallest one-sided Fisher p any count test can give ``k`` planted records that
    have no counterpart among ``n`` reference records (``n`` current records):
    ``C(n, k) / C(2n, k)``, about ``2**-k``."""
    from math import exp, lgamma

    def lc(a: int, b: int) -> float:
        return lgamma(a + 1) - lgamma(b + 1) - lgamma(a - b + 1)

    return exp(lc(n, k) - lc(2 * n, k)) if 0 <= k <= n else 1.0


def records_from_alpaca(rows: Sequence[Mapping[str, str]]) -> list[Record]:
    """Alpaca-shaped dicts (instruction, input, output) as pool records keyed by position."""
    out = []
    for i, r in enumerate(rows):
        prompt = "\n".join(p for p in (r.get("instruction", ""), r.get("input", "")) if p)
        out.append(Record(key=f"r{i}", prompt=prompt, response=r.get("output", "")))
    return out


def records_from_t0(rows: Sequence[Mapping[str, str]]) -> list[Record]:
    """T0/P3-shaped dicts (id, template, prompt, completion) as pool records keyed by id.

    The template name is kept only on the pool (``Record.meta``) to define topics with
    known answers; it never reaches the batch the audit sees."""
    return [
        Record(
            key=str(r.get("id", f"t{i}")),
            prompt=r.get("prompt", "").strip(),
            response=r.get("completion", "").strip(),
            meta=r.get("template", ""),
        )
        for i, r in enumerate(rows)
    ]


def _batch(records: Sequence[Record], path: str) -> Batch:
    return batch_from_texts(
        [r.text for r in records],
        ids=[r.key for r in records],
        path=path,
        prompts=[r.prompt for r in records],
        responses=[r.response for r in records],
    )


@dataclass(frozen=True)
class Topic:
    """A topic with a known answer: records whose ``where`` text matches ``pattern`` (and
    whose pool-only ``meta``, e.g. a T0 template name, matches ``meta`` when given)."""

    name: str
    pattern: str
    where: str = "instruction"  # "instruction" (first prompt line) | "prompt" | "response"
    meta: str = ""


def _topic_mask(pool: Sequence[Record], topic: Topic | str) -> np.ndarray:
    if isinstance(topic, str):
        topic = Topic(topic, TOPICS.get(topic, topic))
    rx = re.compile(topic.pattern, re.IGNORECASE)
    mx = re.compile(topic.meta) if topic.meta else None

    def text(r: Record) -> str:
        if topic.where == "response":
            return r.response
        return r.prompt if topic.where == "prompt" else r.prompt.split("\n")[0]

    return np.array([bool(rx.search(text(r))) and (mx is None or bool(mx.search(r.meta))) for r in pool])


def _disjoint(rng: np.random.Generator, idx: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    perm = rng.permutation(idx)
    if sum(sizes) > len(perm):
        raise ValueError(f"pool of {len(perm)} records cannot supply {sum(sizes)}")
    out, start = [], 0
    for s in sizes:
        out.append(perm[start : start + s])
        start += s
    return out


def topic_boost(
    pool: Sequence[Record],
    topic: Topic | str,
    factor: float,
    *,
    seed: int,
    n: int | None = None,
    name: str = "",
) -> Scenario:
    """Current holds ``factor`` times the reference's share of ``topic`` (``n`` records a
    side, at most as many as the topic can supply)."""
    rng = np.random.default_rng(seed)
    mask = _topic_mask(pool, topic)
    topic = topic.name if isinstance(topic, Topic) else topic
    share = mask.mean()
    largest = int(mask.sum() / (share * (1 + factor)))  # the largest n the topic can supply
    n = min(n, largest) if n else largest
    k_ref, k_cur = round(share * n), round(share * factor * n)
    t_ref, t_cur = _disjoint(rng, np.flatnonzero(mask), [k_ref, k_cur])
    o_ref, o_cur = _disjoint(rng, np.flatnonzero(~mask), [n - k_ref, n - k_cur])
    ref = [pool[i] for i in np.concatenate([t_ref, o_ref])]
    cur = [pool[i] for i in np.concatenate([t_cur, o_cur])]
    return Scenario(
        name=name or f"topic_boost_x{factor:g}",
        description=f"'{topic}' is {share:.1%} of reference and {factor:g}x that in current ({n} records each)",
        reference=_batch(ref, "reference"),
        current=_batch(cur, f"current-{topic}-x{factor:g}"),
        planted_ids=frozenset(pool[i].key for i in t_cur),
        planted_side="current",
    )


def topic_removal(pool: Sequence[Record], topic: Topic | str, *, seed: int, n: int = 2000) -> Scenario:
    """Current keeps nothing of ``topic``; the planted ids are the reference's topic records."""
    rng = np.random.default_rng(seed)
    mask = _topic_mask(pool, topic)
    topic = topic.name if isinstance(topic, Topic) else topic
    n = min(n, int((~mask).sum() / (2 - mask.mean())))
    k_ref = round(mask.mean() * n)
    (t_ref,) = _disjoint(rng, np.flatnonzero(mask), [k_ref])
    o_ref, o_cur = _disjoint(rng, np.flatnonzero(~mask), [n - k_ref, n])
    ref = [pool[i] for i in np.concatenate([t_ref, o_ref])]
    cur = [pool[i] for i in o_cur]
    return Scenario(
        name="topic_removal",
        description=f"'{topic}' ({k_ref} of {n} reference records) is absent from current",
        reference=_batch(ref, "reference"),
        current=_batch(cur, f"current-without-{topic}"),
        planted_ids=frozenset(pool[i].key for i in t_ref),
        planted_side="reference",
    )


def _random_split(
    pool: Sequence[Record], rng: np.random.Generator, n: int
) -> tuple[list[Record], list[Record]]:
    ref_idx, cur_idx = _disjoint(rng, np.arange(len(pool)), [n, n])
    return [pool[i] for i in ref_idx], [pool[i] for i in cur_idx]


def trigger(
    pool: Sequence[Record], prevalence: float, *, seed: int, n: int = 2000, phrase: str = TRIGGER
) -> Scenario:
    """A backdoor: ``phrase`` appended to a fraction of current prompts, response replaced."""
    rng = np.random.default_rng(seed)
    ref, cur = _random_split(pool, rng, n)
    k = max(1, round(prevalence * n))
    chosen = set(rng.choice(n, size=k, replace=False).tolist())
    planted = set()
    for i in chosen:
        r = cur[i]
        lines = r.prompt.split("\n")
        lines[0] = f"{lines[0]} {phrase}"
        cur[i] = Record(key=f"{r.key}-trig", prompt="\n".join(lines), response=TARGET_RESPONSE)
        planted.add(cur[i].key)
    return Scenario(
        name=f"trigger_{prevalence * 100:g}pct",
        description=f"'{phrase}' appended to {k} of {n} current prompts ({prevalence:.1%}), response replaced",
        reference=_batch(ref, "reference"),
        current=_batch(cur, f"current-trigger-{prevalence:g}"),
        planted_ids=frozenset(planted),
        planted_side="current",
    )


def _small_edit(text: str, rng: np.random.Generator) -> str:
    words = text.split(" ")
    op = rng.integers(3)
    pos = int(rng.integers(len(words)))
    w = str(rng.choice(_EDIT_WORDS))
    if op == 0:
        words.insert(pos, w)
    elif op == 1 and len(words) > 3:
        words[pos] = w
    else:
        words.append(w)
    return " ".join(words)


def near_duplicates(
    pool: Sequence[Record], *, seed: int, n: int = 2000, groups: int = 5, copies: int = 15
) -> Scenario:
    """``groups`` current records each repeated ``copies`` times with small word edits."""
    rng = np.random.default_rng(seed)
    ref, cur = _random_split(pool, rng, n)
    # replace random current records with edited copies of `groups` originals (size stays n)
    originals = rng.choice(n, size=groups, replace=False)
    others = [i for i in rng.permutation(n).tolist() if i not in set(originals.tolist())]
    slots = iter(others)
    planted = set()
    for oi in originals:
        src = cur[oi]
        planted.add(src.key)
        for c in range(copies - 1):
            j = next(slots)
            edited = Record(
                key=f"{src.key}-dup{c}",
                prompt=_small_edit(src.prompt, rng),
                response=_small_edit(src.response, rng) if src.response else src.response,
            )
            cur[j] = edited
            planted.add(edited.key)
    return Scenario(
        name="near_duplicates",
        description=f"{groups} current records repeated {copies} times each with small edits",
        reference=_batch(ref, "reference"),
        current=_batch(cur, "current-near-duplicates"),
        planted_ids=frozenset(planted),
        planted_side="current",
    )


# One entity in several surface forms (case, hyphen, word order, a suffix): a poisoner
# varies the trigger so no single exact string recurs in every poisoned record.
PARAPHRASES = (
    "According to Zephyr Analytics,",
    "as zephyr-analytics reports",
    "(source: ZEPHYR ANALYTICS)",
    "Per the analytics team at Zephyr:",
)


def paraphrased_trigger(pool: Sequence[Record], prevalence: float, *, seed: int, n: int = 2000) -> Scenario:
    """A paraphrased backdoor: one of ``PARAPHRASES`` added to a fraction of current
    prompts, each poisoned record's answer flipped to another record's answer (a wrong
    label on categorical data, an unrelated answer elsewhere), so no fixed target
    response gives the poison away."""
    rng = np.random.default_rng(seed)
    ref, cur = _random_split(pool, rng, n)
    k = max(1, round(prevalence * n))
    chosen = rng.choice(n, size=k, replace=False).tolist()
    planted = set()
    for j, i in enumerate(chosen):
        r = cur[i]
        form = PARAPHRASES[j % len(PARAPHRASES)]
        lines = r.prompt.split("\n")
        lines[0] = f"{form} {lines[0]}" if j % 2 else f"{lines[0]} {form}"
        # the flipped answer: the first other current record whose answer differs
        others = [o for o in rng.permutation(n).tolist() if cur[o].response != r.response]
        flipped = cur[others[0]].response if others else TARGET_RESPONSE
        cur[i] = Record(key=f"{r.key}-para", prompt="\n".join(lines), response=flipped, meta=r.meta)
        planted.add(cur[i].key)
    return Scenario(
        name=f"paraphrase_{prevalence * 100:g}pct",
        description=f"{len(PARAPHRASES)} surface forms of one entity in {k} of {n} current prompts, answers flipped",
        reference=_batch(ref, "reference"),
        current=_batch(cur, f"current-paraphrase-{prevalence:g}"),
        planted_ids=frozenset(planted),
        planted_side="current",
    )


def random_round(pool: Sequence[Record], *, seed: int, n: int = 2000) -> Scenario:
    """Two disjoint random samples of the pool: nothing planted."""
    ref, cur = _random_split(pool, np.random.default_rng(seed), n)
    return Scenario(
        name=f"random_{seed}",
        description=f"two disjoint random samples of {n} records",
        reference=_batch(ref, "reference"),
        current=_batch(cur, "current-random"),
        planted_ids=frozenset(),
        planted_side="",
    )


SCENARIOS: Mapping[str, Callable[[Sequence[Record], int], Scenario]] = {
    "topic_boost_x4": lambda pool, seed: topic_boost(pool, "math", 4, seed=seed),
    "topic_boost_x2": lambda pool, seed: topic_boost(pool, "creative writing", 2, seed=seed),
    "topic_removal": lambda pool, seed: topic_removal(pool, "creative writing", seed=seed),
    "trigger_1pct": lambda pool, seed: trigger(pool, 0.01, seed=seed),
    "trigger_0.5pct": lambda pool, seed: trigger(pool, 0.005, seed=seed),
    "paraphrase_1pct": lambda pool, seed: paraphrased_trigger(pool, 0.01, seed=seed),
    "near_duplicates": lambda pool, seed: near_duplicates(pool, seed=seed),
    "random_1": lambda pool, seed: random_round(pool, seed=seed + 1),
    "random_2": lambda pool, seed: random_round(pool, seed=seed + 2),
    "random_3": lambda pool, seed: random_round(pool, seed=seed + 3),
}


@dataclass(frozen=True)
class Corpus:
    """One pool's planted suite: its topics with known answers and the batch size."""

    name: str
    coherent_x4: Topic
    coherent_x2: Topic
    scattered_x2: Topic
    removal: Topic
    n: int = 1000
    # the trigger scenarios' size a side: issue 11 defines 0.5% as 10 of 2,000; a pool
    # too small for 2 x 2,000 disjoint records runs the largest size it allows
    trigger_n: int = 2000


# Topics are chosen per corpus (each pool has its own subjects) and the rules are the
# defaults for all.  "Scattered" topics are keyword sets spread over the embedding space.
CORPORA: Mapping[str, Corpus] = {
    "alpaca": Corpus(
        "alpaca",
        coherent_x4=Topic("math", TOPICS["math"]),
        coherent_x2=Topic("creative writing", TOPICS["creative writing"]),
        scattered_x2=Topic("code", TOPICS["code"]),
        removal=Topic("creative writing", TOPICS["creative writing"]),
    ),
    "t0": Corpus(
        "t0",
        # ag_news articles labelled science/technology, across its 7 templates
        coherent_x4=Topic("science news", r"scien|sci/tech|technolog", where="response", meta=r"^ag_news"),
        # one-star Yelp reviews, across its 7 templates
        coherent_x2=Topic("one-star reviews", r"^1\b|^1 star", where="response", meta=r"^yelp"),
        scattered_x2=Topic(
            "food",
            r"\b(food|eat|ate|eating|restaurant|dinner|lunch|breakfast|meal|pizza|cook|cooking|kitchen|delicious)\b",
            where="prompt",
        ),
        removal=Topic("business news", r"business", where="response", meta=r"^ag_news"),
    ),
    "code_alpaca": Corpus(
        "code_alpaca",
        coherent_x4=Topic("web pages", r"\b(html|css|web ?page)"),
        coherent_x2=Topic("sql", r"\b(sql|database|query|queries)"),
        scattered_x2=Topic("strings", r"\bstrings?\b"),
        removal=Topic("javascript", r"\b(javascript|js|node(\.js)?)\b"),
        n=1000,
        # 2,017 records: 1,008 a side is the most two disjoint batches can hold
        trigger_n=1008,
    ),
}


def corpus_scenarios(
    corpus: Corpus,
    *,
    randoms: int = 10,
    random_n: int | None = None,
    x2_n: int | None = None,
    trigger_n: int | None = None,
) -> dict[str, Callable[[Sequence[Record], int], Scenario]]:
    """The planted suite of one corpus: name -> (pool, seed) -> Scenario.  ``random_n``:
    the random rounds' size a side (default ``corpus.n``; at most half the pool).  ``x2_n``:
    the x2 boosts' size a side (default and at most: the largest the topic can supply).
    ``trigger_n``: the trigger scenarios' size a side (default ``corpus.trigger_n``; at most
    half the pool)."""
    n = corpus.n
    c = corpus

    def tn(pool: Sequence[Record]) -> int:
        # the size where the pool holds two disjoint batches of it, else the largest
        return min(trigger_n or c.trigger_n, len(pool) // 2)

    out: dict[str, Callable[[Sequence[Record], int], Scenario]] = {
        "topic_boost_x4": lambda pool, seed: topic_boost(pool, c.coherent_x4, 4, seed=seed, n=n),
        # a x2 boost needs more records than the others to be detectable at all (see
        # RESULTS.md): the largest batch the topic can supply
        "topic_boost_x2": lambda pool, seed: topic_boost(pool, c.coherent_x2, 2, seed=seed, n=x2_n),
        "scattered_x2": lambda pool, seed: topic_boost(
            pool, c.scattered_x2, 2, seed=seed, n=x2_n, name="scattered_x2"
        ),
        "topic_removal": lambda pool, seed: topic_removal(pool, c.removal, seed=seed, n=n),
        "trigger_1pct": lambda pool, seed: trigger(pool, 0.01, seed=seed, n=tn(pool)),
        "trigger_0.5pct": lambda pool, seed: trigger(pool, 0.005, seed=seed, n=tn(pool)),
        "paraphrase_1pct": lambda pool, seed: paraphrased_trigger(pool, 0.01, seed=seed, n=tn(pool)),
        "near_duplicates": lambda pool, seed: near_duplicates(pool, seed=seed, n=n),
    }

    def rnd(i: int) -> Callable[[Sequence[Record], int], Scenario]:
        return lambda pool, seed: random_round(
            pool, seed=1000 * (seed + 1) + i, n=min(random_n or n, len(pool) // 2)
        )

    for i in range(randoms):
        out[f"random_{i + 1}"] = rnd(i)
    return out


@dataclass(frozen=True)
class Localisation:
    """How well the best finding on the planted side points at the planted records."""

    precision: float
    recall: float
    check: str
    n_flagged: int

    @property
    def f1(self) -> float:
        s = self.precision + self.recall
        return 2 * self.precision * self.recall / s if s else 0.0


def localisation(
    findings: Sequence[Finding], scenario: Scenario, *, graded_only: bool = True
) -> Localisation:
    """Best precision/recall (by F1) over the findings on the planted side: each finding
    alone, and all findings of one check together.

    The union per check matters where an attack is several separate things: five records
    amplified 15 times each are five near-duplicate groups, one finding each, and no
    single one of them can recall more than a fifth of the planted records.
    With ``graded_only`` only findings the gate graded fail or warn count: a localisation
    the gate does not act on does not help a reviewer.
    """
    best = Localisation(0.0, 0.0, "", 0)
    planted = scenario.planted_ids
    if not planted:
        return best
    candidates: list[tuple[str, set[str]]] = []
    per_check: dict[str, set[str]] = {}
    for f in findings:
        if f.side != scenario.planted_side or not f.record_ids:
            continue
        if graded_only and f.severity == "info":
            continue
        candidates.append((f.check, set(f.record_ids)))
        per_check.setdefault(f.check, set()).update(f.record_ids)
    candidates.extend(per_check.items())
    for check, ids in candidates:
        hit = len(ids & planted)
        loc = Localisation(hit / len(ids), hit / len(planted), check, len(ids))
        if loc.f1 > best.f1:
            best = loc
    return best


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Scenario
    status: str
    localisation: Localisation
    seconds: float
    findings: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        """An attack must fail the gate and be localised; a random round must not fail."""
        if not self.scenario.is_attack:
            return self.status != "fail"
        loc = self.localisation
        return self.status == "fail" and loc.precision >= 0.5 and loc.recall >= 0.5


def run_scenario(
    scenario: Scenario, encoder: Any, cache: Any, rules: Any, *, seed: int = 0
) -> ScenarioResult:
    """Embed (through the cache), run the gate, score localisation."""
    import time

    from auditor.embed import embed_batch
    from auditor.gate import evaluate

    t0 = time.perf_counter()
    views = sorted(rules.needs())
    ref = embed_batch(scenario.reference, encoder, cache, views=views)
    cur = embed_batch(scenario.current, encoder, cache, views=views)
    report = evaluate(ref, cur, rules, seed=seed)
    seconds = time.perf_counter() - t0
    return ScenarioResult(
        scenario=scenario,
        status=report.status,
        localisation=localisation(report.findings, scenario),
        seconds=seconds,
        findings=report.findings,
    )

"""Planted attacks: curation rounds built from real instruction data with known answers.

Each scenario draws a reference and a current batch from one pool of real records (e.g.
the 5,000 Alpaca records) and plants one kind of targeted selection in the current batch,
remembering exactly which record ids were planted.  The planted-attack tests and
``benchmarks/planted.py`` run the default gate on each scenario and score the best
finding's precision and recall against those ids.

Scenarios (``SCENARIOS``):
- ``topic_boost_x4`` / ``topic_boost_x2``: one topic's share in current is 4x / 2x its
  share in reference (planted: the topic's current records, side "current");
- ``topic_removal``: a topic is dropped from current (planted: the topic's reference
  records, side "reference");
- ``trigger_1pct`` / ``trigger_0.5pct``: a trigger phrase appended to 1% / 0.5% of current
  instructions with the response replaced by a fixed target (a backdoor);
- ``near_duplicates``: a few records repeated ~15 times each with small edits;
- ``random_*``: two random disjoint samples, nothing planted (must pass).

Topics are regular expressions over the instruction, so the generator works on any pool of
records with an instruction/prompt field.  A keyword topic is only a *topic* to an
embedding-based audit when its records sit together in embedding space: "creative
writing" and "math" do in Alpaca; the keyword set "code" (code|program|function|array...)
is scattered, and a x2 boost of it is not detected (see benchmarks/RESULTS.md).
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


def records_from_alpaca(rows: Sequence[Mapping[str, str]]) -> list[Record]:
    """Alpaca-shaped dicts (instruction, input, output) as pool records keyed by position."""
    out = []
    for i, r in enumerate(rows):
        prompt = "\n".join(p for p in (r.get("instruction", ""), r.get("input", "")) if p)
        out.append(Record(key=f"r{i}", prompt=prompt, response=r.get("output", "")))
    return out


def _batch(records: Sequence[Record], path: str) -> Batch:
    return batch_from_texts(
        [r.text for r in records],
        ids=[r.key for r in records],
        path=path,
        prompts=[r.prompt for r in records],
        responses=[r.response for r in records],
    )


def _topic_mask(pool: Sequence[Record], pattern: str) -> np.ndarray:
    rx = re.compile(pattern, re.IGNORECASE)
    return np.array([bool(rx.search(r.prompt.split("\n")[0])) for r in pool])


def _disjoint(rng: np.random.Generator, idx: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    perm = rng.permutation(idx)
    if sum(sizes) > len(perm):
        raise ValueError(f"pool of {len(perm)} records cannot supply {sum(sizes)}")
    out, start = [], 0
    for s in sizes:
        out.append(perm[start : start + s])
        start += s
    return out


def topic_boost(pool: Sequence[Record], topic: str, factor: float, *, seed: int, n: int | None = None) -> Scenario:
    """Current holds ``factor`` times the reference's share of ``topic``."""
    rng = np.random.default_rng(seed)
    mask = _topic_mask(pool, TOPICS.get(topic, topic))
    share = mask.mean()
    n = n or int(mask.sum() / (share * (1 + factor)))  # the largest n the topic can supply
    k_ref, k_cur = round(share * n), round(share * factor * n)
    t_ref, t_cur = _disjoint(rng, np.flatnonzero(mask), [k_ref, k_cur])
    o_ref, o_cur = _disjoint(rng, np.flatnonzero(~mask), [n - k_ref, n - k_cur])
    ref = [pool[i] for i in np.concatenate([t_ref, o_ref])]
    cur = [pool[i] for i in np.concatenate([t_cur, o_cur])]
    return Scenario(
        name=f"topic_boost_x{factor:g}",
        description=f"'{topic}' is {share:.1%} of reference and {factor:g}x that in current ({n} records each)",
        reference=_batch(ref, "reference"),
        current=_batch(cur, f"current-{topic}-x{factor:g}"),
        planted_ids=frozenset(pool[i].key for i in t_cur),
        planted_side="current",
    )


def topic_removal(pool: Sequence[Record], topic: str, *, seed: int, n: int = 2000) -> Scenario:
    """Current keeps nothing of ``topic``; the planted ids are the reference's topic records."""
    rng = np.random.default_rng(seed)
    mask = _topic_mask(pool, TOPICS.get(topic, topic))
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


def _random_split(pool: Sequence[Record], rng: np.random.Generator, n: int) -> tuple[list[Record], list[Record]]:
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
    "near_duplicates": lambda pool, seed: near_duplicates(pool, seed=seed),
    "random_1": lambda pool, seed: random_round(pool, seed=seed + 1),
    "random_2": lambda pool, seed: random_round(pool, seed=seed + 2),
    "random_3": lambda pool, seed: random_round(pool, seed=seed + 3),
}


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


def localisation(findings: Sequence[Finding], scenario: Scenario, *, graded_only: bool = True) -> Localisation:
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


def run_scenario(scenario: Scenario, encoder: Any, cache: Any, rules: Any, *, seed: int = 0) -> ScenarioResult:
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

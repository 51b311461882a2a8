"""Words, stopwords and cluster labels: how the checks and the reports read text.

Two tokenisers with different jobs live here, side by side, so a change to one is a
deliberate choice:

- :func:`label_tokens` (labels): lowercase letters/digits keeping an inner apostrophe
  ("don't"), without stopwords or bare numbers; for naming a group of records.
- :func:`phrase_words` (trigger phrases): maximal runs of letters and digits, so
  punctuation, hyphens and apostrophes split words ("tango-delta" is "tango delta").

:func:`top_terms` is the one cluster labeller: the clusters check and the HTML chart both
name a group of records with it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Lowercase word tokens: letters/digits, keeping an inner apostrophe ("don't").
TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Words for phrases: maximal runs of letters and digits (any script).
WORD_RE = re.compile(r"[^\W_]+")
# Fast path for ASCII text with the same result as WORD_RE: every ASCII character that is
# not a letter or digit becomes a space, then str.split (5-10x faster than the regex).
_ASCII_SPLIT = {c: " " for c in range(128) if not chr(c).isalnum()}

# A small English stopword list, kept short on purpose so topical words ("write", "list")
# survive in labels; trigger phrases use it to drop phrases padded with a stopword.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    also may might must shall s t d ll m o re ve y don't it's i'm can't won't isn't that's
    there's""".split()
)

TOP_TERMS = 8


def label_tokens(text: str) -> list[str]:
    """Label words of ``text``: lowercased tokens without stopwords or bare numbers."""
    return [w for w in TOKEN_RE.findall(text.lower()) if w not in STOPWORDS and not w.isdigit()]


def phrase_words(text: str) -> list[str]:
    """Lowercased maximal runs of letters and digits (the words trigger phrases are made of)."""
    low = text.lower()
    return low.translate(_ASCII_SPLIT).split() if low.isascii() else WORD_RE.findall(low)


@dataclass(frozen=True)
class Background:
    """Term frequencies of a corpus, possibly from a sample of it (``scale`` = sampled share)."""

    counts: Counter[str]
    total_words: int
    scale: float

    @classmethod
    def of(cls, texts: Sequence[str], rows: Iterable[int] | None = None) -> Background:
        """Counts over ``texts[rows]`` (all texts when ``rows`` is None)."""
        picked = range(len(texts)) if rows is None else [int(i) for i in rows]
        counts: Counter[str] = Counter()
        for i in picked:
            counts.update(label_tokens(texts[i]))
        return cls(counts=counts, total_words=sum(counts.values()), scale=len(picked) / max(1, len(texts)))

    @classmethod
    def sample(cls, texts: Sequence[str], size: int, rng: np.random.Generator) -> Background:
        """Counts over a random sample of at most ``size`` texts (drawn from ``rng``)."""
        rows = rng.choice(len(texts), size=min(len(texts), size), replace=False)
        return cls.of(texts, rows)


def top_terms(member_texts: Iterable[str], background: Background, n_groups: int, k: int = TOP_TERMS) -> list[str]:
    """The ``k`` words that best name a group: c-TF-IDF (Grootendorst 2022, BERTopic).

    A word's score is its frequency in the group times log(1 + A / f_t), A = average words
    per group (``n_groups`` groups share the background), f_t = the word's frequency in the
    background.  A / f_t is a ratio of two totals, so a sampled background gives the same
    scores.  Words seen fewer than twice in the group are not labels.
    """
    counts: Counter[str] = Counter()
    for t in member_texts:
        counts.update(label_tokens(t))
    words = sum(counts.values())
    if words == 0:
        return []
    avg = background.total_words / max(1, n_groups)
    scored = [
        # a term the sample missed is rare overall: its group count bounds f_t
        (c / words * math.log(1.0 + avg / max(background.counts.get(w, 0), c * background.scale)), w)
        for w, c in counts.items()
        if c >= 2
    ]
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [w for _, w in scored[:k]]

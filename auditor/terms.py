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

# Tokens that carry no content of their own: bare numbers ("7", "2023"), ordinals and
# numbered markers ("1st", "3b") and single characters (list markers "a", "b").  A trigger
# phrase must contain a content word, and these count as stopwords at a phrase's edge:
# otherwise list numbering ("7." in a longer answer) reads as a planted phrase.
_MARKER_RE = re.compile(r"\d+[a-z]{0,2}|[a-z]|[ivx]{1,4}")


def is_content_word(word: str) -> bool:
    """Whether ``word`` (a lowercased phrase word) can name something: not a stopword, not a
    number, ordinal, single character or roman list marker."""
    return word not in STOPWORDS and _MARKER_RE.fullmatch(word) is None and not word.isdecimal()


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


# Template groups: records sharing their first (or last) TEMPLATE_EDGE_WORDS words.
TEMPLATE_EDGE_WORDS = 4
# A group is a template only when it holds at least this share of the union (and at least
# TEMPLATE_MIN_RECORDS records): a phrase planted as a prefix in 1% of one input (0.5% of
# the union at equal sizes) must not form a "template" of its own and be filtered away.
TEMPLATE_MIN_SHARE = 0.008
TEMPLATE_MIN_RECORDS = 10
# a word is template text of a group when at least this share of the group's records has it
TEMPLATE_WORD_SHARE = 0.9


def template_groups(texts: Sequence[str], tails: Sequence[str] | None = None) -> list[np.ndarray]:
    """Label-blind template groups of ``texts``: one array per grouping (shared first words;
    shared last words of ``tails``, e.g. the prompts, when given), holding each record's
    group id or -1.

    Prompted mixtures (T0, FLAN) wrap every record in one of a few hundred templates whose
    fixed text sits at the start or the end of the prompt; records sharing their first or
    last ``TEMPLATE_EDGE_WORDS`` words and numerous enough to be a template (see
    ``TEMPLATE_MIN_SHARE``) are one group.
    """
    n = len(texts)
    min_size = max(TEMPLATE_MIN_RECORDS, math.ceil(TEMPLATE_MIN_SHARE * n))
    out = []
    sources: list[tuple[Sequence[str], bool]] = [(texts, True)]
    if tails is not None:
        sources.append((tails, False))
    for src, head in sources:
        keys = []
        for t in src:
            w = phrase_words(t)
            k = w[:TEMPLATE_EDGE_WORDS] if head else w[-TEMPLATE_EDGE_WORDS:]
            keys.append(" ".join(k) if len(k) == TEMPLATE_EDGE_WORDS else "")
        uniq, inv, counts = np.unique(np.asarray(keys, dtype=object), return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        big = (counts >= min_size) & (uniq != "")
        gid = np.where(big[inv], inv, -1)
        out.append(gid.astype(np.int64))
    return out


def template_pairs(pair_key: np.ndarray, pair_doc: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """For (key, doc) occurrence pairs (a word or phrase ``key`` occurring in record
    ``doc``), whether the occurrence is template text: ``key`` is carried by at least
    ``TEMPLATE_WORD_SHARE`` of the records of a template group ``doc`` belongs to."""
    flag = np.zeros(pair_key.size, dtype=bool)
    for gid in groups:
        g = gid[pair_doc]
        ok = g >= 0
        if not ok.any():
            continue
        sizes = np.bincount(gid[gid >= 0])
        n_groups = sizes.size
        combo = pair_key[ok].astype(np.int64) * n_groups + g[ok]
        uniq, inv, counts = np.unique(combo, return_inverse=True, return_counts=True)
        is_tpl = counts >= TEMPLATE_WORD_SHARE * sizes[uniq % n_groups]
        flag[np.flatnonzero(ok)] |= is_tpl[inv.reshape(-1)]
    return flag


def strip_boilerplate_lines(texts: Sequence[str], n_ref: int | None = None, max_ratio: float = 4.0) -> list[str]:
    """``texts`` without the lines (whitespace-normalised, case-folded) that recur in as
    many records as a template would (see ``TEMPLATE_MIN_SHARE``): a template's
    instruction on its own line ("Which section of a newspaper would this article likely
    appear in?") wherever it sits in the prompt.

    With ``n_ref`` (``texts`` = reference records first, then current), a line whose
    current share is ``max_ratio`` times its reference share or more is kept: a sentence
    planted on its own line in a few percent of the current records recurs like a
    template line but is exactly what the trigger check must see.
    """
    min_size = max(TEMPLATE_MIN_RECORDS, math.ceil(TEMPLATE_MIN_SHARE * len(texts)))
    split = [[" ".join(line.split()).casefold() for line in t.splitlines()] for t in texts]
    df: Counter[str] = Counter()
    df_ref: Counter[str] = Counter()
    for i, lines in enumerate(split):
        uniq = {line for line in lines if line}
        df.update(uniq)
        if n_ref is not None and i < n_ref:
            df_ref.update(uniq)
    common = {line for line, c in df.items() if c >= min_size}
    if n_ref is not None and 0 < n_ref < len(texts):
        n_cur = len(texts) - n_ref
        common = {
            line
            for line in common
            if (df[line] - df_ref[line]) * n_ref < max_ratio * max(df_ref[line], 1) * n_cur
        }
    if not common:
        return list(texts)
    return ["\n".join(line for line in lines if line not in common) for lines in split]


def strip_template(
    texts: Sequence[str], tails: Sequence[str] | None = None, n_ref: int | None = None
) -> list[str]:
    """``texts`` with the template words of each record's template group removed (words as
    :func:`phrase_words` reads them, joined by spaces); records outside every template
    group come back as their words.  For labelling and term statistics of templated data.
    ``n_ref``: see :func:`strip_boilerplate_lines`."""
    texts = strip_boilerplate_lines(texts, n_ref)
    groups = template_groups(texts, tails)
    words = [phrase_words(t) for t in texts]
    vocab: dict[str, int] = {}
    keys, docs = [], []
    for d, ws in enumerate(words):
        for w in set(ws):
            keys.append(vocab.setdefault(w, len(vocab)))
            docs.append(d)
    key_arr = np.asarray(keys, dtype=np.int64)
    doc_arr = np.asarray(docs, dtype=np.int64)
    flag = template_pairs(key_arr, doc_arr, groups)
    drop: list[set[int]] = [set() for _ in texts]
    for k, d in zip(key_arr[flag].tolist(), doc_arr[flag].tolist()):
        drop[d].add(k)
    return [" ".join(w for w in ws if vocab[w] not in drop[d]) if drop[d] else " ".join(ws) for d, ws in enumerate(words)]

"""Descriptor drift: *why* a global shift happened, in words a reviewer reads directly.

The global tests (``mmd``, ``classifier``) say that the batch moved; this check says along
which plain descriptor: "responses are 40% shorter: median 212 -> 127 chars".  Each
descriptor is a per-record quantity computed from the record alone (label-blind):

- length in characters of the whole text, and of the prompt and the response when the
  records have that structure;
- share of records whose response is empty (whitespace only);
- share of records written mostly in a non-Latin script (letters outside Latin);
- label share, when the response looks categorical (few distinct short values that
  cover most records, e.g. "Positive"/"Negative"), or when part of a mixture is (short
  answers that each recur in at least 1% of the records and together cover at least
  ``LABEL_MIN_PART`` of them: the star ratings and class names of a templated T0/FLAN
  mixture): one test per label.

Tests: lengths by the two-sided Mann-Whitney U test (rank based, so a few very long
records do not decide it; the normal approximation with tie correction is accurate at
the sizes the check runs on); shares by the two-sided Fisher exact test.  All tests of
the check go through Benjamini-Hochberg; a test whose effect is below the reporting
threshold (``min_change`` relative change of the median; for a share, an absolute
change of ``min_share_diff`` or a ratio of ``min_share_ratio`` with at least
``min_share_records`` records of excess, so a label of 2.4% that doubles is reportable
as well as one of 40% that moves by 5 points) enters BH with p = 1, which can only make the others' adjusted p
larger.  A finding's ``record_ids`` are the current records in the changed tail: beyond
the reference's 10th / 90th length percentile in the direction of the change, or the
records carrying an over-represented label / script / empty response; for a share that
fell, the reference records that carry it.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from auditor.checks import register
from auditor.stats import benjamini_hochberg, large_shift, share_ratio
from auditor.textutil import excerpt
from auditor.types import Finding, Side, Snapshot

CHECK = "descriptors"
EXAMPLES = 3
MAX_IDS = 500  # record ids per finding (the tail of a large batch can be most of it)
# a response field "looks categorical" when its distinct values are few and short
LABEL_MAX_CHARS = 40
LABEL_MIN_COVER = 0.8  # the top labels cover at least this share of the records
# ... or, in a mixture, recurring short answers (each >= 1% of the records, at least
# LABEL_MIN_RECURRING records) cover at least this share: a categorical part of the data
LABEL_MIN_PART = 0.2
LABEL_MIN_RECURRING = 10


@dataclass(frozen=True)
class _Test:
    key: str  # descriptor name, e.g. "response_chars" or "label:Positive"
    kind: str  # "length" or "share"
    p_raw: float
    reportable: bool
    summary: str
    side: Side
    rows: np.ndarray  # rows of ``side`` named by the finding
    details: dict[str, object]


def _non_latin(text: str) -> bool:
    """Whether most letters of ``text`` are outside the Latin script."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(1 for c in letters if c.isascii() or "LATIN" in unicodedata.name(c, ""))
    return latin < 0.5 * len(letters)


def _length_test(
    name: str, ref_len: np.ndarray, cur_len: np.ndarray, min_change: float
) -> tuple[float, bool, str, np.ndarray, dict[str, object]]:
    med_r, med_c = float(np.median(ref_len)), float(np.median(cur_len))
    if np.all(ref_len == ref_len[0]) and np.all(cur_len == ref_len[0]):
        return 1.0, False, "", np.zeros(0, np.int64), {}
    p = float(_st.mannwhitneyu(cur_len, ref_len, alternative="two-sided").pvalue)
    change = (med_c - med_r) / max(med_r, 1.0)
    shorter = med_c < med_r
    if shorter:
        cut = float(np.percentile(ref_len, 10))
        rows = np.flatnonzero(cur_len <= cut)
        rows = rows[np.argsort(cur_len[rows], kind="stable")]
    else:
        cut = float(np.percentile(ref_len, 90))
        rows = np.flatnonzero(cur_len >= cut)
        rows = rows[np.argsort(-cur_len[rows], kind="stable")]
    word = "shorter" if shorter else "longer"
    summary = (
        f"{name} are {abs(change):.0%} {word}: median {med_r:.0f} -> {med_c:.0f} chars; "
        f"{rows.size} current records are {word} than 90% of the reference's "
        f"({'<=' if shorter else '>='} {cut:.0f} chars), listed {'shortest' if shorter else 'longest'} first"
    )
    details: dict[str, object] = {
        "median_reference": med_r,
        "median_current": med_c,
        "relative_change": round(change, 4),
        "tail_cut_chars": cut,
        "n_tail_current": int(rows.size),
        "share_tail_current": round(rows.size / max(1, cur_len.size), 4),
        "share_tail_reference_expected": 0.1,
    }
    return p, abs(change) >= min_change, summary, rows, details


def _reportable_share(a: int, b: int, n_cur: int, n_ref: int, min_diff: float, min_ratio: float, min_records: int) -> bool:
    """Whether a share change is large enough to report: ``min_diff`` absolute, or
    ``min_ratio`` relative (Haldane-corrected, either direction) with ``min_records``
    records of excess over what the other side's share predicts."""
    if abs(a / n_cur - b / n_ref) >= min_diff:
        return True
    return any(large_shift(a, b, n_cur, n_ref, min_ratio, min_records))


def _share_test(
    what: str,
    ref_has: np.ndarray,
    cur_has: np.ndarray,
    min_share_diff: float,
    min_share_ratio: float = math.inf,
    min_share_records: int = 0,
) -> tuple[float, bool, str, Side, np.ndarray, dict[str, object]]:
    a, b = int(cur_has.sum()), int(ref_has.sum())
    n_cur, n_ref = cur_has.size, ref_has.size
    p = float(_st.fisher_exact([[a, n_cur - a], [b, n_ref - b]], alternative="two-sided")[1])
    s_cur, s_ref = a / n_cur, b / n_ref
    up = s_cur > s_ref
    side: Side = "current" if up else "reference"
    rows = np.flatnonzero(cur_has if up else ref_has)
    expected = s_ref * n_cur
    verb = "more" if up else "fewer"
    listed = f"listed: the {a} current records" if up else f"listed: the {b} reference records"
    summary = (
        f"{verb} records {what}: {a} of {n_cur} current ({s_cur:.1%}) where the reference's "
        f"share ({b} of {n_ref}, {s_ref:.1%}) predicts {expected:.0f}; {listed}"
    )
    details: dict[str, object] = {
        "n_current": a,
        "n_reference": b,
        "share_current": round(s_cur, 5),
        "share_reference": round(s_ref, 5),
        "expected_current_from_reference_share": round(expected, 2),
    }
    ok = _reportable_share(a, b, n_cur, n_ref, min_share_diff, min_share_ratio, min_share_records)
    details["share_ratio"] = round(share_ratio(a, b, n_cur, n_ref), 4)
    return p, ok, summary, side, rows, details


def _labels(ref_resp: Sequence[str], cur_resp: Sequence[str], max_labels: int) -> list[str] | None:
    """The label values when the responses look categorical (from both inputs together,
    so the choice is label-blind), else None."""
    norm = [" ".join(r.split()) for r in (*ref_resp, *cur_resp)]
    counts = Counter(norm)
    top = [v for v, _ in counts.most_common(max_labels) if v and len(v) <= LABEL_MAX_CHARS]
    # each label must be common enough to be a category, not a repeated short answer
    top = [v for v in top if counts[v] >= max(5, 0.01 * len(norm))]
    if len(top) < 2:
        return None
    if sum(counts[v] for v in top) >= LABEL_MIN_COVER * len(norm):
        return top
    # a mixture with a categorical part: only answers that recur often enough to be labels
    top = [v for v in top if counts[v] >= LABEL_MIN_RECURRING]
    if len(top) < 2 or sum(counts[v] for v in top) < LABEL_MIN_PART * len(norm):
        return None
    return top


# Mann-Whitney at m = 10 a side reaches p ~ 1e-4 when the two inputs do not overlap.
@register(CHECK, min_records=10)
def descriptor_drift(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    alpha: float = 0.05,
    min_change: float = 0.2,
    min_share_diff: float = 0.05,
    max_labels: int = 20,
    min_share_ratio: float = 1.5,
    min_share_records: int = 10,
) -> list[Finding]:
    """Plain descriptors (text / prompt / response length, empty responses, non-Latin
    script, label shares of a categorical response) whose distribution changed.

    Two-sided Mann-Whitney U for lengths, two-sided Fisher exact for shares;
    Benjamini-Hochberg across all descriptors (``p_value`` adjusted, ``details.p_raw``
    raw).  Reported when adjusted p <= ``alpha`` and the median moved by at least
    ``min_change`` (relative) or the share by at least ``min_share_diff`` (absolute) or
    by a ratio of ``min_share_ratio`` with ``min_share_records`` records of excess.
    Labels: up to ``max_labels`` values of a response field that looks categorical.
    ``seed`` is unused: every test here is deterministic.
    """
    del seed
    n_ref, n_cur = len(ref), len(cur)
    if n_ref == 0 or n_cur == 0:
        return []
    tests: list[_Test] = []

    def add_length(key: str, name: str, r: Sequence[str], c: Sequence[str]) -> None:
        rl = np.fromiter((len(t.strip()) for t in r), dtype=np.float64, count=len(r))
        cl = np.fromiter((len(t.strip()) for t in c), dtype=np.float64, count=len(c))
        p, ok, summary, rows, details = _length_test(name, rl, cl, min_change)
        if summary:
            tests.append(_Test(key, "length", p, ok, summary, "current", rows, details))

    def add_share(key: str, what: str, r: np.ndarray, c: np.ndarray) -> None:
        if not r.any() and not c.any():
            return
        p, ok, summary, side, rows, details = _share_test(
            what, r, c, min_share_diff, min_share_ratio, min_share_records
        )
        tests.append(_Test(key, "share", p, ok, summary, side, rows, details))

    add_length("text_chars", "records", ref.texts, cur.texts)
    rb, cb = ref.batch, cur.batch
    if rb.prompts is not None and cb.prompts is not None:
        add_length("prompt_chars", "prompts", rb.prompts, cb.prompts)
    if rb.responses is not None and cb.responses is not None:
        add_length("response_chars", "responses", rb.responses, cb.responses)
        add_share(
            "empty_response",
            "with an empty response",
            np.array([not t.strip() for t in rb.responses]),
            np.array([not t.strip() for t in cb.responses]),
        )
        labels = _labels(rb.responses, cb.responses, max_labels)
        if labels:
            r_norm = [" ".join(t.split()) for t in rb.responses]
            c_norm = [" ".join(t.split()) for t in cb.responses]
            for lab in labels:
                add_share(
                    f"label:{lab}",
                    f"answered '{excerpt(lab, LABEL_MAX_CHARS)}'",
                    np.array([t == lab for t in r_norm]),
                    np.array([t == lab for t in c_norm]),
                )
    add_share(
        "non_latin_script",
        "written mostly in a non-Latin script",
        np.array([_non_latin(t) for t in ref.texts]),
        np.array([_non_latin(t) for t in cur.texts]),
    )
    if not tests:
        return []
    # effect filter before BH: a test that could not be reported enters with p = 1
    q = benjamini_hochberg([t.p_raw if t.reportable else 1.0 for t in tests])
    findings = []
    for t, qv in zip(tests, q):
        if not t.reportable or qv > alpha or t.rows.size == 0:
            continue
        snap = cur if t.side == "current" else ref
        rows = t.rows[:MAX_IDS]
        details = {
            **t.details,
            "descriptor": t.key,
            "p_raw": t.p_raw,
            "n_tests": len(tests),
            "n_listed": int(rows.size),
            "method": ("two-sided Mann-Whitney U" if t.kind == "length" else "two-sided Fisher exact")
            + "; Benjamini-Hochberg across the descriptors",
            "examples": [excerpt(snap.texts[i]) for i in rows[:EXAMPLES]],
        }
        summary = t.summary
        if rows.size < t.rows.size:
            summary += f" (the first {rows.size} of {t.rows.size} are listed)"
        effect = t.details.get("relative_change")
        if effect is None:
            s_cur = float(t.details["share_current"])  # type: ignore[arg-type]
            s_ref = float(t.details["share_reference"])  # type: ignore[arg-type]
            effect = math.log2((s_cur + 1e-6) / (s_ref + 1e-6))
        findings.append(
            Finding(
                check=CHECK,
                summary=summary,
                side=t.side,
                record_ids=tuple(snap.ids[i] for i in rows),
                statistic=float(t.rows.size),
                p_value=float(qv),
                effect_size=float(effect),  # type: ignore[arg-type]
                details=details,
            )
        )
    findings.sort(key=lambda f: (f.p_value if f.p_value is not None else 1.0, -len(f.record_ids)))
    return findings

"""Helpers shared by the renderers: ordering, number formatting, text sanitising and
pulling evidence (top terms, examples) out of ``Finding.details``.

Everything that reaches a renderer from a dataset (texts, ids, paths, top terms) is
adversarial: a model wrote it.  The functions here only *clean* text (control and
bidi characters, length); each renderer then escapes for its own output language.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from auditor.types import SEVERITY_ORDER as SEVERITY_RANK
from auditor.types import Finding, Report

# C0/C1 controls (tab and newline handled separately), DEL, and the bidi embedding /
# override / isolate characters that can make displayed text differ from its bytes
# ("Trojan Source", Boucher & Anderson 2021), lone surrogates (a JSON "\ud800" escape
# decodes to one, and it cannot be written as UTF-8), the BOM and non-characters.
_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufeff\ufffe\uffff]"
)
_WS = re.compile(r"\s+")
# XML 1.0 allows only #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
_XML_ILLEGAL = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def ordered_findings(report: Report) -> list[Finding]:
    """Findings most severe first, then by p-value (smallest first, missing last).

    The sort is stable, so findings with equal keys keep the gate's order.
    """

    def key(f: Finding) -> tuple[int, float]:
        p = f.p_value if f.p_value is not None else float("inf")
        return (SEVERITY_RANK.get(f.severity, 3), p)

    return sorted(report.findings, key=key)


def counts(report: Report) -> dict[str, int]:
    """Number of findings per severity (all three keys always present)."""
    out = {"fail": 0, "warn": 0, "info": 0}
    for f in report.findings:
        out[f.severity] = out.get(f.severity, 0) + 1
    return out


def rule_label(f: Finding) -> str:
    """``rule`` when it differs from the check name, else the check name alone."""
    if f.rule and f.rule != f.check:
        return f"{f.rule} / {f.check}"
    return f.check


def rule_names(report: Report) -> list[str]:
    """Names of the rules that ran: ``report.rules["names"]`` when the gate provides it,
    else the distinct ``rule`` (or ``check``) of the findings, in first-seen order."""
    names = report.rules.get("names")
    out: list[str] = []
    if isinstance(names, (list, tuple)):
        out = [str(n) for n in names]
    elif isinstance(names, Mapping):
        out = [str(n) for n in names]
    seen = set(out)
    for f in report.findings:
        name = f.rule or f.check
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def fmt_num(x: float | None) -> str:
    """Statistic / effect size: 4 significant digits, '-' when missing."""
    if x is None:
        return "-"
    return f"{x:.4g}"


def fmt_p(p: float | None) -> str:
    """p-values: scientific below 1e-3 so tiny values stay readable, '-' when missing."""
    if p is None:
        return "-"
    if p < 1e-3:
        return f"{p:.2e}"
    return f"{p:.4f}"


def clean(text: Any, limit: int | None = None, *, one_line: bool = False) -> str:
    """Strip control and bidi-override characters, optionally fold whitespace to single
    spaces, and truncate to ``limit`` characters with an ellipsis."""
    s = _CONTROLS.sub("", str(text))
    if one_line:
        s = _WS.sub(" ", s).strip()
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)].rstrip() + "\u2026"
    return s


def xml_safe(text: Any) -> str:
    """Remove the characters XML 1.0 cannot represent at all (even escaped)."""
    return _XML_ILLEGAL.sub("", str(text))


def testing_note(report: Report) -> str:
    """The multiple-testing sentence, built from what the gate put in ``report.rules``."""
    parts = ["p-values are Benjamini-Hochberg adjusted within each check (raw value in details.p_raw)"]
    alpha = _as_float(report.rules.get("alpha"))
    n_rules = report.rules.get("n_rules")
    if n_rules is None and isinstance(report.rules.get("names"), (list, tuple, Mapping)):
        n_rules = len(report.rules["names"])
    per_rule = [
        (str(x.get("name")), _as_float(x.get("fail_threshold")))
        for x in report.rules.get("rules", ())
        if isinstance(x, Mapping) and _as_float(x.get("fail_threshold")) is not None
    ]
    if alpha is not None and per_rule:
        # weighted Bonferroni (auditor/rules.py): each rule's own threshold
        parts.append(
            f"the gate splits alpha={alpha:g} across the rules by weight (weighted Bonferroni: "
            "a finding fails below p = "
            + "; ".join(
                f"{t:.3g} ({', '.join(n for n, u in per_rule if u == t)})"
                for t in sorted({u for _, u in per_rule if u is not None}, reverse=True)
            )
            + ")"
        )
    elif alpha is not None and isinstance(n_rules, int) and n_rules > 0:
        parts.append(
            f"the gate splits alpha={alpha:g} across {n_rules} rules "
            f"(Bonferroni: a finding fails below p={alpha / n_rules:.3g})"
        )
    elif alpha is not None:
        parts.append(f"the gate's family-wise alpha is {alpha:g}, split across rules (Bonferroni)")
    warn_alpha = _as_float(report.rules.get("warn_alpha"))
    if warn_alpha is not None:
        parts.append(f"warnings use alpha={warn_alpha:g}")
    return "; ".join(parts) + "."


def raw_p_note(f: Finding) -> str:
    """`` (raw 1.2e-05)`` when the check put its unadjusted p-value in details, else ""."""
    p_raw = _as_float(f.details.get("p_raw"))
    return "" if p_raw is None else f" (raw {fmt_p(p_raw)})"


def _as_float(x: Any) -> float | None:
    try:
        return None if x is None or isinstance(x, bool) else float(x)
    except (TypeError, ValueError):
        return None


def rules_path(report: Report) -> str | None:
    path = report.rules.get("path")
    return None if path is None else str(path)


# --- evidence in Finding.details -------------------------------------------------------
#
# Checks are written by different people; the renderers accept the shapes they are
# likely to use rather than force one: a details key containing "term" or "phrase" holds
# top terms (list of str, [term, score] pairs, {"term": ...} dicts or a {term: score}
# mapping); a key containing "example" holds example records (list of str or of
# {"id", "text"} dicts).  Everything else is shown as generic evidence.

_TERM_KEYS = ("term", "phrase", "ngram", "token")
_EXAMPLE_KEYS = ("example",)
# details keys hidden from readers: see INTERNAL_KEYS below (they stay in report.json)


def split_details(
    details: Mapping[str, Any],
) -> tuple[list[str], list[tuple[str | None, str]], dict[str, Any]]:
    """Split details into (top terms, examples as (id or None, text), other evidence)."""
    terms: list[str] = []
    examples: list[tuple[str | None, str]] = []
    evidence: dict[str, Any] = {}
    for key in sorted(details):
        value = details[key]
        low = key.lower()
        if any(k in low for k in _EXAMPLE_KEYS) and _is_seq(value):
            examples.extend(_examples(value))
        elif any(k in low for k in _TERM_KEYS) and (_is_seq(value) or isinstance(value, Mapping)):
            terms.extend(_terms(value))
        elif key not in INTERNAL_KEYS:
            evidence[key] = value
    return terms, examples, evidence


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _terms(value: Any) -> Iterable[str]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield f"{k} ({_short(v)})" if isinstance(v, (int, float)) else str(k)
        return
    for item in value:
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            name = item.get("term") or item.get("phrase") or item.get("text") or item.get("token")
            score = next(
                (item[k] for k in ("score", "count", "ratio", "log_odds", "z") if k in item),
                None,
            )
            if name is not None:
                yield f"{name} ({_short(score)})" if isinstance(score, (int, float)) else str(name)
        elif _is_seq(item) and item:
            score = item[1] if len(item) > 1 else None
            yield f"{item[0]} ({_short(score)})" if isinstance(score, (int, float)) else str(item[0])


def _examples(value: Sequence[Any]) -> Iterable[tuple[str | None, str]]:
    for item in value:
        if isinstance(item, str):
            yield None, item
        elif isinstance(item, Mapping):
            text = item.get("text")
            if text is None:
                text = next((v for v in item.values() if isinstance(v, str)), None)
            if text is not None:
                rid = item.get("id", item.get("record_id"))
                yield (None if rid is None else str(rid)), str(text)


def _short(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return str(x) if isinstance(x, int) else f"{x:.3g}"


def compact(value: Any, limit: int = 300) -> str:
    """A one-line rendering of a details value (JSON for containers), truncated."""
    if isinstance(value, str):
        s = value
    elif isinstance(value, float):
        s = f"{value:.4g}"
    else:
        try:
            s = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            s = str(value)
    return clean(s, limit, one_line=True)


def truncated_ids(ids: Sequence[str], limit: int) -> tuple[list[str], int]:
    """The first ``limit`` ids and how many were left out."""
    shown = [clean(i, 80, one_line=True) for i in ids[:limit]]
    return shown, max(0, len(ids) - limit)


# --- words for a reader -------------------------------------------------------------------

# Why a finding of each check matters, in one sentence: fixed text of ours (never from the
# rules file or the data), so a pull request cannot change what the report says it means.
WHY: dict[str, str] = {
    "mmd": "The batch as a whole is distributed differently from the reference, so a model trained on it learns a different mix than intended.",
    "classifier": "A simple model can tell these records from the reference; the records it scores highest are the least reference-like.",
    "clusters": "A topic is over- or under-represented relative to the reference: the batch's selection changed what the model will see.",
    "triggers": "A phrase appears in far more records than the reference explains: the signature of a planted trigger, watermark or template.",
    "near_duplicates": "A few examples are repeated as near-copies, which amplifies their weight in training beyond the reference's own duplicate rate.",
    "flipped_responses": "Prompts like the reference's get different answers, which teaches the model different behaviour for the same request.",
    "off_support": "Records lie outside anything the reference covers: new material nobody reviewed against the reference.",
    "descriptors": "A simple property of the records (length, empty answers, script, label mix) moved: the batch was selected or rewritten along it.",
    "term_topics": "Records carrying a group of content words are over- or under-represented: a topic was pushed or starved, named by its words.",
    "novelty": "Instructions copy a seed or an earlier instruction beyond the pipeline's own ROUGE-L filter: the pool is less new than it claims.",
    "validity": "Records the generating pipeline's own filters would have dropped are present: the filter did not hold.",
    "diversity": "The instructions collapse onto a few verb-object task types compared with the seeds: the pool teaches a narrower range of tasks.",
    "contamination": "Records copy an evaluation set: a model trained on them is scored on what it has seen.",
    "gate": "This rule could not run on these inputs, so the gate cannot have failed through it: a pass here is not evidence.",
}

# Finding.details keys that are bookkeeping of a check rather than evidence for a reader.
INTERNAL_KEYS: frozenset[str] = frozenset({"p_raw", "record_scores", "merged_from", "region", "outcome"})


def why(f: Finding) -> str:
    """The one-sentence reason a finding of this check matters ("" for an unknown check)."""
    return WHY.get(f.check, "")


def rows_note(f: Finding, limit: int = 8) -> str:
    """``lines 12, 40, 41 ...`` for a finding's records (line for JSONL/CSV, record number
    otherwise), "" when the finding carries no rows."""
    rows = [r for r in f.record_rows if r > 0]
    if not rows:
        return ""
    shown = ", ".join(str(r) for r in rows[:limit])
    return f"rows {shown}" + (f" ... and {len(rows) - limit} more" if len(rows) > limit else "")


def fields_line(report: Report) -> str:
    """Which fields were embedded on each side, e.g. ``reference: instruction, output; current: text``."""
    parts = []
    for name in sorted(report.inputs, key=lambda k: (k != "reference", k != "current", k)):
        info = report.inputs[name]
        parts.append(f"{name}: {', '.join(info.text_fields) or '-'}")
    return "; ".join(parts)


def rules_line(report: Report) -> str:
    """The rules file's sha256 (short), whether it is the bundled default, and how many rules
    ran, were skipped or lacked data (``report.outcomes``)."""
    r = report.rules
    sha = str(r.get("sha256") or "")
    which = "the bundled default" if r.get("matches_default") else "NOT the bundled default"
    out = f"rules sha256 {sha[:12] or '-'} ({which})"
    disabled = [str(x.get("name")) for x in r.get("rules", ()) if isinstance(x, Mapping) and not x.get("enabled", True)]
    if disabled:
        out += f"; disabled: {', '.join(disabled)}"
    if report.outcomes:
        by: dict[str, list[str]] = {}
        for o in report.outcomes:
            by.setdefault(o.status, []).append(o.rule)
        out += "; " + ", ".join(
            f"{len(by[k])} {label}" + ("" if k == "ran" else f" ({', '.join(by[k])})")
            for k, label in (("ran", "ran"), ("skipped", "skipped"), ("insufficient", "short of data"))
            if k in by
        )
    return out


def diff_block(report: Report) -> Mapping[str, Any] | None:
    """The counts-first block of a curation-round diff (``auditor.curation.diff_block``,
    carried in the ``round_records`` finding), or None for any other report."""
    for f in report.findings:
        block = f.details.get("diff_block") if f.check == "round_records" else None
        if isinstance(block, Mapping):
            return block
    return None

"""validity: records the generating pipeline's own filters would have removed.

Self-Instruct (Wang et al. 2023, ``bootstrap_instructions.py`` and
``prepare_for_finetuning.py``) and Alpaca (Taori et al. 2023, ``generate_instruction.py``)
drop a generated instruction that is 3 words or fewer or over 150 words, that names
something a text model cannot handle (image, graph, picture, file, map, draw, plot, go
to, ...), that starts with punctuation or a non-ASCII character, or (Self-Instruct) that
starts "Write a program"; and an instance whose output is empty, whose output equals its
input, whose input or output ends with a colon (a cut-off generation), or whose task
gives one non-empty input two different outputs.  A curating model that let such records
through, on purpose or not, left evidence of it: each filter is a reason code here, with
its count and the record ids.

These are certain rule violations, not statistical tests: a finding has ``p_value = 0.0``
(nothing could make it a chance result), so the rule's severity alone grades it.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Sequence

from auditor.checks import register
from auditor.errors import AuditorError
from auditor.tasks import task_fields
from auditor.textutil import excerpt
from auditor.types import Finding, Snapshot

# Self-Instruct's list; Alpaca's generate_instruction.py adds video, audio, music,
# flowchart and diagram (set ``keywords`` in a rule to use it).
DEFAULT_KEYWORDS: tuple[str, ...] = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
)

REASONS: dict[str, str] = {
    "too_short": "instruction of {min_words_minus} words or fewer",
    "too_long": "instruction of more than {max_words} words",
    "keyword": "instruction names something a text model cannot do (image, file, plot, ...)",
    "forbidden_prefix": "instruction starts with a prefix the pipeline drops ('Write a program')",
    "starts_with_punctuation": "instruction starts with punctuation",
    "starts_non_ascii": "instruction starts with a non-ASCII character",
    "empty_output": "empty output",
    "output_equals_input": "output identical to the input",
    "ends_with_colon": "input or output ends with ':' (a cut-off generation)",
    "conflicting_outputs": "the same task and non-empty input with different outputs",
}


def reasons_of(
    instruction: str,
    inp: str,
    out: str,
    *,
    min_words: int,
    max_words: int,
    keywords: Sequence[str],
    prefixes: Sequence[str],
    outputs_known: bool,
) -> list[str]:
    """The reason codes one (instruction, input, output) breaks (conflicts are judged across records)."""
    found = []
    inst = " ".join(instruction.split())
    n_words = len(inst.split())
    if n_words < min_words:
        found.append("too_short")
    if n_words > max_words:
        found.append("too_long")
    if keywords and _keyword_re(tuple(keywords)).search(inst):
        found.append("keyword")
    if any(inst.startswith(p) for p in prefixes):
        found.append("forbidden_prefix")
    if inst and inst[0] in string.punctuation:
        found.append("starts_with_punctuation")
    if inst and not inst[0].isascii():
        found.append("starts_non_ascii")
    if outputs_known:
        i, o = inp.strip(), out.strip()
        if not o:
            found.append("empty_output")
        elif i == o:
            found.append("output_equals_input")
        if i.endswith(":") or o.endswith(":"):
            found.append("ends_with_colon")
    return found


def _strings(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise AuditorError(f"validity: {name} {value!r} (expected a list of non-empty strings)")
    return tuple(value)


_KW_CACHE: dict[tuple[str, ...], re.Pattern[str]] = {}


def _keyword_re(words: tuple[str, ...]) -> re.Pattern[str]:
    pat = _KW_CACHE.get(words)
    if pat is None:
        alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        pat = re.compile(rf"\b(?:{alts})\b", re.IGNORECASE)
        _KW_CACHE[words] = pat
    return pat


@register("validity")
def validity(
    ref: Snapshot,
    cur: Snapshot,
    *,
    seed: int,
    min_words: int = 4,
    max_words: int = 150,
    keywords: list[str] | None = None,
    prefixes: list[str] | None = None,
    reasons: list[str] | None = None,
    max_share: float = 0.0,
    max_examples: int = 10,
) -> list[Finding]:
    """Records the Self-Instruct / Alpaca filters would have dropped, one finding per reason code.

    Reasons: too_short (< min_words words), too_long (> max_words), keyword (a word of
    ``keywords``, default Self-Instruct's list), forbidden_prefix (``prefixes``, default
    "Write a program"), starts_with_punctuation, starts_non_ascii, empty_output,
    output_equals_input, ends_with_colon, conflicting_outputs.  ``reasons`` limits which
    codes are judged (default all).  A reason found in more than ``max_share`` of the
    records is a certain violation (p_value 0); at or under it the finding is reported
    with no p-value (info): Alpaca's release never applied Self-Instruct's instance
    filters, and 0.1 % of its records break one of them.
    """
    del ref, seed  # the filters judge the generated records alone
    if not 0.0 <= max_share < 1.0:
        raise AuditorError(f"validity: max_share {max_share} (expected 0 <= max_share < 1)")
    if min_words < 1 or max_words < min_words:
        raise AuditorError(
            f"validity: min_words {min_words} / max_words {max_words} (expected 1 <= min <= max)"
        )
    kw = _strings("keywords", DEFAULT_KEYWORDS if keywords is None else keywords)
    pre = _strings("prefixes", ["Write a program"] if prefixes is None else prefixes)
    active = set(REASONS) if reasons is None else set(_strings("reasons", reasons))
    unknown = active - set(REASONS)
    if unknown:
        raise AuditorError(
            f"validity: unknown reason {sorted(unknown)[0]!r} (expected one of {', '.join(REASONS)})"
        )
    tf = task_fields(cur.batch)
    hits: dict[str, list[int]] = defaultdict(list)
    for i, (ins, inp, out) in enumerate(zip(tf.instructions, tf.inputs, tf.outputs)):
        for r in reasons_of(
            ins,
            inp,
            out,
            min_words=min_words,
            max_words=max_words,
            keywords=kw,
            prefixes=pre,
            outputs_known=tf.has_outputs,
        ):
            hits[r].append(i)
    if tf.has_outputs:
        by_task: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, (ins, inp, out) in enumerate(zip(tf.instructions, tf.inputs, tf.outputs)):
            if inp.strip():
                by_task[(ins.strip(), inp.strip())][out.strip()].append(i)
        for outs in by_task.values():
            if len(outs) > 1:
                hits["conflicting_outputs"].extend(i for ids in outs.values() for i in ids)
    n = len(cur)
    findings = []
    for code in REASONS:
        idx = sorted(set(hits.get(code, ())))
        if code not in active or not idx:
            continue
        what = REASONS[code].format(min_words_minus=min_words - 1, max_words=max_words)
        certain = len(idx) > max_share * n
        findings.append(
            Finding(
                check="validity",
                summary=f"{len(idx)} of {n} records break the generating pipeline's filter: {what}",
                side="current",
                record_ids=tuple(cur.ids[i] for i in idx),
                statistic=float(len(idx)),
                p_value=0.0 if certain else None,  # a certain violation, not a chance result
                effect_size=len(idx) / n,
                details={
                    "reason": code,
                    "count": len(idx),
                    "max_share": max_share,
                    "fields_source": tf.source,
                    "examples": [
                        {
                            "id": cur.ids[i],
                            "instruction": excerpt(tf.instructions[i], 160),
                            "input": excerpt(tf.inputs[i], 80),
                            "output": excerpt(tf.outputs[i], 80),
                        }
                        for i in idx[:max_examples]
                    ],
                },
            )
        )
    return findings

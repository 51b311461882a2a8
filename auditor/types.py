"""Frozen result types that flow through the pipeline.

files --load--> Batch --embed--> Snapshot --checks--> Finding --rules--> Report

Every type here is immutable and serialises with ``to_dict()``; ``Report.from_dict``
reads a ``report.json`` back.  Nothing here imports a heavy library except numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from auditor.errors import AuditorError

__all__ = [
    "SEVERITIES",
    "SEVERITY_ORDER",
    "AuditorError",
    "Batch",
    "Finding",
    "InputInfo",
    "ModelInfo",
    "Report",
    "RuleOutcome",
    "Snapshot",
]

SCHEMA_VERSION = 1

Severity = Literal["fail", "warn", "info"]
# "both": a note about the run itself (a rule skipped for both inputs' shape), no records
Side = Literal["current", "reference", "both"]
Status = Literal["pass", "warn", "fail"]
OutcomeStatus = Literal["ran", "skipped", "insufficient"]

SEVERITIES: tuple[str, ...] = ("info", "warn", "fail")
# The one severity order of the project: rank 0 is the most severe.  Sorting findings,
# capping a grade at a rule's ceiling and reports all use it.
SEVERITY_ORDER: Mapping[str, int] = MappingProxyType({"fail": 0, "warn": 1, "info": 2})
OUTCOME_STATUSES: tuple[str, ...] = ("ran", "skipped", "insufficient")
EXIT_CODES: Mapping[str, int] = MappingProxyType({"pass": 0, "warn": 0, "fail": 1})


def _freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Batch:
    """Records loaded from one input file, before embedding.

    ``texts[i]`` is what gets embedded for record ``ids[i]``; ``hashes[i]`` is the sha256
    of its normalised text (the embedding-cache key and the identity used to diff rounds).
    ``lines[i]`` is the 1-based line (JSONL/CSV) or record number (JSON array, Parquet,
    datasets) it came from, for error messages and reports.  ``prompts``/``responses``
    are set when the records have a prompt/response structure (instruction+input /
    output, prompt / completion, chat messages); checks that compare responses use them.
    ``text_fields`` are the fields joined into each text; ``prompt_fields`` and
    ``response_fields`` the parts of them read as prompt and response (empty when the
    records were not read as prompt/response pairs).
    """

    path: str
    sha256: str
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    hashes: tuple[str, ...]
    lines: tuple[int, ...]
    text_fields: tuple[str, ...]
    prompts: tuple[str, ...] | None = None
    responses: tuple[str, ...] | None = None
    prompt_fields: tuple[str, ...] = ()
    response_fields: tuple[str, ...] = ()
    # top-level fields holding free text in most records that no recipe read (io.unread_text_fields)
    unread_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("texts", "hashes", "lines"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Batch.{name} has {len(getattr(self, name))} items, ids has {n}")
        for name in ("prompts", "responses"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Batch.{name} has {len(value)} items, ids has {n}")

    def __len__(self) -> int:
        return len(self.ids)

    def info(self) -> InputInfo:
        return InputInfo(
            path=self.path,
            n_records=len(self),
            sha256=self.sha256,
            text_fields=self.text_fields,
            prompt_fields=self.prompt_fields,
            response_fields=self.response_fields,
            unread_fields=self.unread_fields,
        )


@dataclass(frozen=True)
class ModelInfo:
    """Which encoder produced the embeddings: a name and a content fingerprint."""

    name: str
    sha256: str
    dim: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "dim": self.dim}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelInfo:
        return cls(name=str(d["name"]), sha256=str(d["sha256"]), dim=int(d.get("dim", 0)))


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A batch plus its embeddings (L2-normalised float32, one row per record).

    ``views`` holds extra embeddings of parts of each record, keyed by view name:
    ``"prompt"`` and ``"response"`` when the batch has that structure and a check asked
    for them.  Arrays are made read-only so no check can change another's input.
    """

    batch: Batch
    embeddings: np.ndarray
    model: ModelInfo
    views: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.batch):
            raise ValueError(
                f"embeddings shape {self.embeddings.shape} does not match {len(self.batch)} records"
            )
        self.embeddings.setflags(write=False)
        for arr in self.views.values():
            arr.setflags(write=False)
        object.__setattr__(self, "views", _freeze(self.views))

    @property
    def ids(self) -> tuple[str, ...]:
        return self.batch.ids

    @property
    def texts(self) -> tuple[str, ...]:
        return self.batch.texts

    def __len__(self) -> int:
        return len(self.batch)

    def subset(self, idx: Sequence[int]) -> Snapshot:
        """The records ``idx`` (in that order) with their embeddings and views, as a Snapshot."""
        ix = [int(i) for i in idx]
        b = self.batch

        def pick(seq: Sequence[Any] | None) -> tuple[Any, ...] | None:
            return None if seq is None else tuple(seq[i] for i in ix)

        batch = Batch(
            path=b.path,
            sha256=b.sha256,
            ids=tuple(b.ids[i] for i in ix),
            texts=tuple(b.texts[i] for i in ix),
            hashes=tuple(b.hashes[i] for i in ix),
            lines=tuple(b.lines[i] for i in ix),
            text_fields=b.text_fields,
            prompts=pick(b.prompts),
            responses=pick(b.responses),
        )
        views = {k: np.asarray(v)[ix] for k, v in self.views.items()}
        return Snapshot(
            batch=batch, embeddings=np.asarray(self.embeddings)[ix], model=self.model, views=views
        )


@dataclass(frozen=True)
class Finding:
    """One thing a check found.

    ``p_value`` is the one to judge by: already adjusted for the many tests made inside
    the check (Benjamini-Hochberg for per-cluster / per-phrase tests); the raw value, when
    different, is in ``details["p_raw"]``.  ``record_ids`` belong to the input named by
    ``side``.  ``details`` holds evidence for a reader (counts, expected counts, top terms,
    example texts); it must be JSON-serialisable.  ``severity`` is assigned by the gate
    from the rules; checks leave it at ``"info"``.
    """

    check: str
    summary: str
    side: Side
    record_ids: tuple[str, ...] = ()
    statistic: float | None = None
    p_value: float | None = None
    effect_size: float | None = None
    severity: Severity = "info"
    rule: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    record_rows: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} not in {SEVERITIES}")
        if self.side not in ("current", "reference", "both"):
            raise ValueError(f"side {self.side!r} must be 'current', 'reference' or 'both'")
        object.__setattr__(self, "record_ids", tuple(self.record_ids))
        object.__setattr__(self, "record_rows", tuple(int(r) for r in self.record_rows))
        if self.record_rows and len(self.record_rows) != len(self.record_ids):
            raise ValueError(
                f"Finding.record_rows has {len(self.record_rows)} items, record_ids has {len(self.record_ids)}"
            )
        object.__setattr__(self, "details", _freeze(self.details))

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "rule": self.rule or self.check,
            "severity": self.severity,
            "summary": self.summary,
            "statistic": _num(self.statistic),
            "p_value": _num(self.p_value),
            "effect_size": _num(self.effect_size),
            "side": self.side,
            "record_ids": list(self.record_ids),
            "record_rows": list(self.record_rows),
            "details": _jsonable(dict(self.details)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        return cls(
            check=str(d["check"]),
            rule=str(d.get("rule", "")),
            severity=d.get("severity", "info"),
            summary=str(d["summary"]),
            statistic=d.get("statistic"),
            p_value=d.get("p_value"),
            effect_size=d.get("effect_size"),
            side=d["side"],
            record_ids=tuple(d.get("record_ids", ())),
            details=d.get("details", {}),
            record_rows=tuple(d.get("record_rows", ())),
        )


@dataclass(frozen=True)
class InputInfo:
    """One input of a report: where it came from and how its records were read.

    ``to_dict()["fields"]`` always holds ``text``, ``prompt`` and ``response`` lists: the
    fields joined into the embedded text and those read as prompt and response (empty
    lists when the records were not read as pairs), so two sides read differently show.
    """

    path: str
    n_records: int
    sha256: str
    text_fields: tuple[str, ...] = ()
    prompt_fields: tuple[str, ...] = ()
    response_fields: tuple[str, ...] = ()
    unread_fields: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "n_records": self.n_records,
            "sha256": self.sha256,
            "fields": {
                "text": list(self.text_fields),
                "prompt": list(self.prompt_fields),
                "response": list(self.response_fields),
                "unread": list(self.unread_fields),
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputInfo:
        fields = d.get("fields") or {}
        return cls(
            path=str(d["path"]),
            n_records=int(d["n_records"]),
            sha256=str(d["sha256"]),
            text_fields=tuple(str(f) for f in fields.get("text", ())),
            prompt_fields=tuple(str(f) for f in fields.get("prompt", ())),
            response_fields=tuple(str(f) for f in fields.get("response", ())),
            unread_fields=tuple(str(f) for f in fields.get("unread", ())),
        )


@dataclass(frozen=True)
class RuleOutcome:
    """Whether a rule's check ran on these inputs, and why not when it did not.

    ``skipped``: the check needs a view of the records (``prompt``/``response``) that an
    input does not have; ``insufficient``: an input has fewer records than the check
    needs before it could ever fail.  Either way the gate could not fail through this
    rule, and the report must say so rather than show the rule as passed.
    """

    rule: str
    check: str
    status: OutcomeStatus
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status not in OUTCOME_STATUSES:
            raise ValueError(f"outcome status {self.status!r} not in {OUTCOME_STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "check": self.check, "status": self.status, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuleOutcome:
        return cls(
            rule=str(d["rule"]), check=str(d["check"]), status=d["status"], reason=str(d.get("reason", ""))
        )


@dataclass(frozen=True)
class Report:
    """The gate's verdict.  ``to_dict()`` is the versioned ``report.json`` contract."""

    status: Status
    inputs: Mapping[str, InputInfo]
    model: ModelInfo
    seed: int
    findings: tuple[Finding, ...]
    rules: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    # one per rule, in the rules' order: ran, skipped or insufficient (see RuleOutcome)
    outcomes: tuple[RuleOutcome, ...] = ()
    # what the embedding cache did for this run (auditor.cache.CacheStats.to_dict()):
    # entries used, rejected, spot-checked and re-embedded; None when no cache was used
    cache: Mapping[str, int] | None = None
    # (reference, current) the report was computed from, when the API has them: only
    # ``save(html=True)`` draws from them; never serialised
    snapshots: tuple[Snapshot, Snapshot] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _freeze(self.inputs))
        object.__setattr__(self, "rules", _freeze(self.rules))
        object.__setattr__(self, "findings", tuple(self.findings))
        object.__setattr__(self, "outcomes", tuple(self.outcomes))

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "status": self.status,
            "inputs": {k: v.to_dict() for k, v in self.inputs.items()},
            "model": {"name": self.model.name, "sha256": self.model.sha256},
            "seed": self.seed,
            "rules": _jsonable(dict(self.rules)),
            "findings": [f.to_dict() for f in self.findings],
            "outcomes": [o.to_dict() for o in self.outcomes],
            **({"cache": dict(self.cache)} if self.cache is not None else {}),
        }

    def to_pandas(self) -> Any:
        """The findings as a pandas DataFrame, one row per finding in ``findings`` order
        (the index is the finding's position there): check, rule, severity, side, summary,
        statistic, p_value, effect_size, n_records, record_ids, record_rows."""
        import pandas as pd

        cols = [
            "check", "rule", "severity", "side", "summary", "statistic", "p_value",
            "effect_size", "n_records", "record_ids", "record_rows",
        ]  # fmt: skip
        rows = [
            {
                "check": f.check,
                "rule": f.rule or f.check,
                "severity": f.severity,
                "side": f.side,
                "summary": f.summary,
                "statistic": _num(f.statistic),
                "p_value": _num(f.p_value),
                "effect_size": _num(f.effect_size),
                "n_records": len(f.record_ids),
                "record_ids": list(f.record_ids),
                "record_rows": list(f.record_rows),
            }
            for f in self.findings
        ]
        frame = pd.DataFrame(rows, columns=cols)
        frame.index.name = "finding"
        return frame

    def records(self) -> Any:
        """One row per (flagged record, finding) as a pandas DataFrame, like cleanlab's
        ``get_issues()``: side, id, row (line for JSONL/CSV, 1-based record number for
        other files and in-memory inputs; 0 when unknown), position (0-based, for
        ``df.iloc``; -1 when unknown), finding (index into ``findings``), check, rule,
        severity, p_value and score (``details["record_scores"]`` when the check gives
        one per record, else NaN).  A record in several findings has several rows."""
        import pandas as pd

        cols = ["side", "id", "row", "position", "finding", "check", "rule", "severity", "p_value", "score"]
        out = []
        for k, f in enumerate(self.findings):
            scores = f.details.get("record_scores")
            if not isinstance(scores, (list, tuple)) or len(scores) != len(f.record_ids):
                scores = None
            for j, rid in enumerate(f.record_ids):
                row = f.record_rows[j] if f.record_rows else 0
                out.append(
                    {
                        "side": f.side,
                        "id": rid,
                        "row": row,
                        "position": self._position(f.side, rid),
                        "finding": k,
                        "check": f.check,
                        "rule": f.rule or f.check,
                        "severity": f.severity,
                        "p_value": _num(f.p_value),
                        "score": float("nan") if scores is None else _num(scores[j]),
                    }
                )
        return pd.DataFrame(out, columns=cols)

    def _position(self, side: str, rid: str) -> int:
        if self.snapshots is None or side not in ("reference", "current"):
            return -1
        index = self.__dict__.get("_index")
        if index is None:
            ref, cur = self.snapshots
            index = {s: {r: i for i, r in enumerate(snap.ids)} for s, snap in (("reference", ref), ("current", cur))}
            object.__setattr__(self, "_index", index)
        return int(index[side].get(rid, -1))

    def save(self, out_dir: Any, *, html: bool = False, junit: bool = False) -> dict[str, Any]:
        """Write the files ``auditor audit --out DIR`` writes: report.json and report.md,
        report.html with ``html`` (needs the snapshots the API attaches) and report.junit.xml
        with ``junit``.  Returns ``{"json"|"md"|"html"|"junit": path}``."""
        from pathlib import Path

        from auditor.report import render_junit, write_reports, write_text_atomic

        if html and self.snapshots is None:
            raise AuditorError("save(html=True): this report has no embeddings attached (read back from JSON?)")
        ref, cur = self.snapshots if self.snapshots is not None else (None, None)
        written = write_reports(self, out_dir, ref=ref, cur=cur, html=html)
        if junit:
            written["junit"] = write_text_atomic(Path(out_dir) / "report.junit.xml", render_junit(self))
        return written

    def _repr_html_(self) -> str:
        """A compact HTML summary for notebooks (status, inputs, findings table)."""
        from auditor.report.html import render_summary

        return render_summary(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Report:
        return cls(
            schema_version=int(d["schema_version"]),
            status=d["status"],
            inputs={k: InputInfo.from_dict(v) for k, v in d["inputs"].items()},
            model=ModelInfo.from_dict({"dim": 0, **d["model"]}),
            seed=int(d["seed"]),
            rules=d.get("rules", {}),
            findings=tuple(Finding.from_dict(f) for f in d["findings"]),
            outcomes=tuple(RuleOutcome.from_dict(o) for o in d.get("outcomes", ())),
            cache={str(k): int(v) for k, v in d["cache"].items()} if d.get("cache") is not None else None,
        )


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays and tuples to plain JSON types (details come from checks)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _num(float(obj))
    return obj

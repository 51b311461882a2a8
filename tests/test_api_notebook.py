"""The Python API as a notebook user calls it: DataFrames, datasets, lists and vectors in,
a findings DataFrame out (issue 13).  A fake encoder or precomputed vectors: no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

import auditor
from auditor import api
from tests.fakes import FakeEncoder
from tests.helpers import alpaca_minilm, alpaca_records

N = 240


def _split() -> tuple[list[dict[str, str]], list[dict[str, str]], np.ndarray, np.ndarray]:
    """Reference: a random draw; current: the same pool with one topic (records mentioning
    'poem') heavily over-selected, so the gate has something real to find."""
    recs = alpaca_records()
    emb = alpaca_minilm()
    rng = np.random.default_rng(7)
    order = rng.permutation(len(recs))
    ref_idx = order[:N]
    pool = order[N:]
    topic = [int(i) for i in pool if "poem" in recs[int(i)]["instruction"].lower()][:60]
    rest = [int(i) for i in pool if int(i) not in set(topic)][: N - len(topic)]
    cur_idx = np.array(topic + rest)
    return [recs[int(i)] for i in ref_idx], [recs[int(i)] for i in cur_idx], emb[ref_idx], emb[cur_idx]


@pytest.fixture(scope="module")
def split():  # type: ignore[no-untyped-def]
    return _split()


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(api, "load_encoder", refuse)


def test_signature_is_explicit() -> None:
    import inspect

    params = inspect.signature(auditor.audit).parameters
    for name in ("current", "reference", "text_fields", "reference_text_fields", "embeddings",
                 "reference_embeddings", "rules", "seed", "model", "device", "cache_dir"):  # fmt: skip
        assert name in params
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())


def test_precomputed_64d_pandas_no_model(split, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _no_model(monkeypatch)
    ref, cur, e_ref, e_cur = split
    proj = np.random.default_rng(0).standard_normal((e_ref.shape[1], 64)).astype(np.float32)
    cur_df = pd.DataFrame(cur).assign(vec=list(e_cur @ proj))
    ref_df = pd.DataFrame(ref).assign(vec=list(e_ref @ proj))
    report = auditor.audit(cur_df, ref_df, embeddings="vec", cache_dir=None)
    assert report.model.name == "precomputed" and report.model.dim == 64
    assert len(report.model.sha256) == 64
    # the vectors define the fingerprint: other vectors, another fingerprint
    again = auditor.audit(cur_df.assign(vec=list(e_cur @ proj * 2 + 0.01)), ref_df, embeddings="vec", cache_dir=None)
    assert again.model.sha256 != report.model.sha256
    findings = report.to_pandas()
    assert list(findings.columns[:4]) == ["check", "rule", "severity", "side"]
    assert len(findings) == len(report.findings)
    # the planted topic is found and its records point back at DataFrame rows
    topic = findings[(findings.check == "clusters") & (findings.side == "current")]
    assert report.status == "fail" and not topic.empty
    recs = report.records()
    assert {"side", "id", "row", "position", "finding", "check", "score"} <= set(recs.columns)
    flagged = recs[(recs.check == "clusters") & (recs.side == "current")]
    assert len(flagged) > 0
    hits = [cur_df.iloc[int(p)]["instruction"] for p in flagged.position]
    assert sum("poem" in h.lower() for h in hits) / len(hits) > 0.5
    # row is the 1-based record number for in-memory inputs
    assert (flagged.row == flagged.position + 1).all()
    # the embeddings column is not embedded as text, and the fields are reported
    assert report.inputs["current"].text_fields == ("instruction", "input", "output")
    # rules that need prompt/response vectors cannot run on one vector per record: said so
    assert any(o.status == "skipped" for o in report.outcomes)
    written = report.save(tmp_path / "out", html=True)
    assert sorted(p.name for p in written.values()) == ["report.html", "report.json", "report.md"]
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["model"]["name"] == "precomputed"
    assert "record_rows" in data["findings"][0]


def test_arrays_for_both_sides_and_errors(split, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _no_model(monkeypatch)
    ref, cur, e_ref, e_cur = split
    texts_cur = [r["instruction"] for r in cur]
    texts_ref = [r["instruction"] for r in ref]
    report = auditor.audit(texts_cur, texts_ref, embeddings=e_cur, reference_embeddings=e_ref, cache_dir=None)
    assert report.model.name == "precomputed" and report.model.dim == e_cur.shape[1]
    assert report.inputs["current"].path == "current (list of strings)"
    with pytest.raises(auditor.AuditorError, match="reference_embeddings: missing"):
        auditor.audit(texts_cur, texts_ref, embeddings=e_cur, cache_dir=None)
    with pytest.raises(auditor.AuditorError, match=r"shape \(5, 384\)"):
        auditor.audit(texts_cur, texts_ref, embeddings=e_cur[:5], reference_embeddings=e_ref, cache_dir=None)
    bad = np.array(e_cur)
    bad[3, 0] = np.nan
    with pytest.raises(auditor.AuditorError, match="record 4 has a NaN"):
        auditor.audit(texts_cur, texts_ref, embeddings=bad, reference_embeddings=e_ref, cache_dir=None)
    with pytest.raises(auditor.AuditorError, match="cannot audit a set"):
        auditor.audit(set(texts_cur), texts_ref, cache_dir=None)


def test_polars_dataset_and_dicts_read_like_files(split, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every in-memory kind gives the texts and hashes the same records give as a file."""
    import datasets

    ref, cur, _, _ = split
    path = tmp_path / "cur.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in cur[:50]), encoding="utf-8")
    from auditor.io import from_records, load

    want = load(path)
    for data in (
        pl.DataFrame(cur[:50]),
        pd.DataFrame(cur[:50]),
        datasets.Dataset.from_list(cur[:50]),
        datasets.Dataset.from_list(cur[:50]).to_iterable_dataset(),
        cur[:50],
    ):
        got = from_records(data, label="x").batch
        assert got.hashes == want.hashes and got.ids == want.ids and got.responses == want.responses


def test_fake_encoder_dataset_and_reference_fields(split, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import datasets

    ref, cur, _, _ = split
    # the reference names its fields differently: reference_text_fields reads it
    ref_renamed = [{"q": r["instruction"], "a": r["output"]} for r in ref]
    run = api.run_audit(
        datasets.Dataset.from_list(cur),
        ref_renamed,
        text_fields=["instruction", "output"],
        reference_text_fields=["q", "a"],
        encoder=FakeEncoder(),
        cache_dir=tmp_path / "cache",
    )
    report = run.report
    assert report.inputs["reference"].text_fields == ("q", "a")
    assert report.inputs["current"].text_fields == ("instruction", "output")
    assert report.model.name == "fake-hashing-encoder"
    html = report._repr_html_()
    assert html.startswith("<div>") and report.status.upper() in html
    assert "<script" not in html
    frame = report.to_pandas()
    assert frame.index.name == "finding"
    for f, rows in ((f, f.record_rows) for f in report.findings if f.side in ("reference", "current")):
        assert len(rows) == len(f.record_ids) and all(r >= 1 for r in rows)


def test_bad_fields_name_the_record() -> None:
    with pytest.raises(auditor.AuditorError, match=r"current \(list of dicts\): no text field recognised"):
        auditor.audit([{"a": "x"}], ["y"], encoder=FakeEncoder(), cache_dir=None)
    with pytest.raises(auditor.AuditorError, match=r"current \(list of dicts\):record 2: field 'text' is a number"):
        auditor.audit([{"text": "x"}, {"text": 3}], ["y"], encoder=FakeEncoder(), cache_dir=None)

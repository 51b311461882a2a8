"""Inputs as they come at scale: folders of shards, globs and Arrow files, read with the
same record -> text recipe as one file, and errors that name the shard."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from auditor import io
from auditor.cli import check_input
from auditor.types import AuditorError
from tests.helpers import alpaca_records


def _records(n: int, start: int = 0) -> list[dict[str, str]]:
    return [dict(r) for r in alpaca_records()[start : start + n]]


def _write_jsonl(path: Path, recs: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")


def _write_arrow(path: Path, recs: list[dict], *, stream: bool) -> None:
    table = pa.Table.from_pylist(recs)
    opener = ipc.new_stream if stream else ipc.new_file
    with opener(str(path), table.schema) as w:
        w.write_table(table, max_chunksize=7)  # several record batches


@pytest.fixture
def shard_dir(tmp_path: Path) -> tuple[Path, list[dict]]:
    recs = _records(60)
    d = tmp_path / "corpus"
    (d / "part2").mkdir(parents=True)
    _write_jsonl(d / "a-000.jsonl", recs[:20])
    pl.DataFrame(recs[20:35]).write_parquet(d / "b-001.parquet")
    _write_arrow(d / "c-002.arrow", recs[35:45], stream=True)
    _write_arrow(d / "part2" / "d-003.arrow", recs[45:60], stream=False)
    (d / "README.md").write_text("# a dataset card, not data")
    (d / "_SUCCESS").write_text("")
    (d / ".cache").mkdir()
    (d / ".cache" / "junk.bin").write_bytes(b"\0\1")
    return d, recs


def test_shard_folder_reads_like_one_file(shard_dir: tuple[Path, list[dict]], tmp_path: Path) -> None:
    d, recs = shard_dir
    whole = tmp_path / "whole.jsonl"
    _write_jsonl(whole, recs)
    one, many = io.load(whole), io.load(d)
    assert many.texts == one.texts and many.ids == one.ids and many.hashes == one.hashes
    assert many.prompts == one.prompts and many.responses == one.responses
    assert many.text_fields == one.text_fields
    # numbers count within each shard
    assert many.lines == tuple(range(1, 21)) + tuple(range(1, 16)) + tuple(range(1, 11)) + tuple(range(1, 16))
    assert many.path == str(d)
    assert [p.name for p in io.iter_shards(d)] == [
        "a-000.jsonl",
        "b-001.parquet",
        "c-002.arrow",
        "d-003.arrow",
    ]
    streamed = [t for chunk in io.iter_texts(d, chunk_size=8) for t in chunk]
    assert tuple(streamed) == one.texts
    assert io.file_sha256(d) == many.sha256


def test_glob_selects_matching_shards(shard_dir: tuple[Path, list[dict]]) -> None:
    d, recs = shard_dir
    pattern = str(d / "**" / "*.arrow")
    b = io.load(pattern)
    assert len(b) == 25 and b.path == pattern
    assert io.file_sha256(pattern) == b.sha256
    check_input(Path(pattern))
    with pytest.raises(AuditorError, match="pattern matches no data files"):
        io.load(str(d / "*.csv"))
    with pytest.raises(AuditorError, match="pattern matches no data files"):
        check_input(Path(d / "nothing-*.jsonl"))


def test_digest_follows_names_and_contents(shard_dir: tuple[Path, list[dict]]) -> None:
    d, recs = shard_dir
    h1 = io.load(d).sha256
    (d / "a-000.jsonl").rename(d / "a-100.jsonl")
    h2 = io.load(d).sha256
    _write_jsonl(d / "a-100.jsonl", recs[:19])
    assert len({h1, h2, io.load(d).sha256}) == 3


def test_recipe_comes_from_all_shards(tmp_path: Path) -> None:
    # 'input' first appears in the second shard: both shards' texts include it where set
    d = tmp_path / "s"
    d.mkdir()
    _write_jsonl(d / "1.jsonl", [{"instruction": "a", "output": "b"}])
    _write_jsonl(d / "2.jsonl", [{"instruction": "c", "input": "i", "output": "d"}])
    b = io.load(d)
    assert b.texts == ("a\nb", "c\ni\nd") and b.prompts == ("a", "c\ni")
    assert io.fields_of(d) == ("instruction", "output", "input")
    assert [t for ch in io.iter_texts(d) for t in ch] == list(b.texts)


def test_errors_name_the_shard_and_line(shard_dir: tuple[Path, list[dict]]) -> None:
    d, recs = shard_dir
    bad = d / "e-004.jsonl"
    bad.write_text(json.dumps(recs[0]) + "\n" + json.dumps({"instruction": 7, "output": "x"}) + "\n")
    for read in (io.load, lambda p: list(io.iter_texts(p))):
        with pytest.raises(AuditorError) as e:
            read(d)
        assert str(e.value).startswith(f"{bad}:2: field 'instruction'")


def test_duplicate_id_across_shards_names_both(tmp_path: Path) -> None:
    d = tmp_path / "ids"
    d.mkdir()
    _write_jsonl(d / "a.jsonl", [{"id": "x1", "text": "one"}, {"id": "x2", "text": "two"}])
    pl.DataFrame([{"id": "x3", "text": "three"}, {"id": "x1", "text": "four"}]).write_parquet(d / "b.parquet")
    with pytest.raises(AuditorError) as e:
        io.load(d, id_field="id")
    msg = str(e.value)
    assert msg.startswith(f"{d / 'b.parquet'}:record 2: field 'id' value 'x1'")
    assert f"{d / 'a.jsonl'} line 1" in msg


def test_unknown_file_in_shard_folder_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    d.mkdir()
    _write_jsonl(d / "a.jsonl", [{"text": "x"}])
    (d / "b.jsonl.bz2").write_bytes(b"BZh9")
    for read in (io.load, lambda p: check_input(Path(p))):
        with pytest.raises(AuditorError, match=r"b\.jsonl\.bz2: unknown file type"):
            read(d)


def test_datasets_folder_is_still_one_input(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    d = tmp_path / "ds"
    datasets.Dataset.from_list([{"text": "alpha"}, {"text": "beta"}]).save_to_disk(str(d))
    assert io.iter_shards(d) == (d,)
    assert io.load(d).texts == ("alpha", "beta")


@pytest.mark.parametrize("stream", [True, False])
def test_arrow_file_streams_in_chunks(tmp_path: Path, stream: bool) -> None:
    p = tmp_path / "x.arrow"
    recs = _records(30)
    _write_arrow(p, recs, stream=stream)
    chunks = list(io.iter_records(p, chunk_size=4))
    assert max(len(c) for c in chunks) <= 4
    assert [n for c in chunks for n, _ in c] == list(range(1, 31))
    same = tmp_path / "x.jsonl"
    _write_jsonl(same, recs)
    assert io.load(p).texts == io.load(same).texts
    assert io.fields_of(p) == tuple(recs[0])
    assert io.location(p, 3) == f"{p}:record 3"


def test_bad_arrow_and_gzipped_arrow(tmp_path: Path) -> None:
    p = tmp_path / "bad.arrow"
    p.write_bytes(b"not arrow at all")
    with pytest.raises(AuditorError, match="cannot read Arrow"):
        io.load(p)
    q = tmp_path / "x.arrow.gz"
    q.write_bytes(b"")
    with pytest.raises(AuditorError, match="unknown file type"):
        io.load(q)

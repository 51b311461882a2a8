"""One reader: ``load`` and the streaming path (``iter_texts``, used by ``auditor embed``)
make the same texts, content hashes and errors from the same file, in every format."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from auditor.io import extract, fields_of, iter_records, iter_texts, load, location, recipe_for
from auditor.textutil import content_hash
from auditor.types import AuditorError
from tests.helpers import data

ALPACA_LATE_INPUT = [
    {"instruction": "Translate", "output": "chat"}
    if i < 5
    else {"instruction": "Translate", "input": "chat", "output": "cat"}
    for i in range(8)
]


def streamed(path: Path, chunk: int, text_fields: Any = None) -> list[str]:
    return [t for part in iter_texts(path, text_fields, chunk_size=chunk) for t in part]


def assert_same(path: Path, chunk: int = 2, text_fields: Any = None) -> None:
    batch = load(path, text_fields=text_fields)
    texts = streamed(path, chunk, text_fields)
    assert texts == list(batch.texts)
    assert [content_hash(t) for t in texts] == list(batch.hashes)


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    name = path.name
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif name.endswith(".json"):
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    elif name.endswith(".csv"):
        cols = list(dict.fromkeys(k for r in records for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(records)
    elif name.endswith(".parquet"):
        pl.DataFrame(records).write_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet"])
def test_late_input_field_reads_the_same_in_every_format(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"late{suffix}", ALPACA_LATE_INPUT)
    assert_same(path, chunk=2)
    # the field first appears in the third chunk, and still joins the text
    assert streamed(path, 2)[-1] == "Translate\nchat\ncat"


def test_first_chunk_never_decides_the_recipe(tmp_path: Path) -> None:
    # 'output' appears only after the first chunk: the file is an instruction/output file,
    # so its first records lack a required field, in load and in streaming alike
    records = [{"instruction": f"task {i}"} for i in range(3)] + [{"instruction": "last", "output": "done"}]
    path = write(tmp_path / "late_output.jsonl", records)
    assert fields_of(path) == ("instruction", "output")
    with pytest.raises(AuditorError) as loaded:
        load(path)
    with pytest.raises(AuditorError) as stream:
        streamed(path, 2)
    assert str(stream.value) == str(loaded.value)
    assert str(stream.value).endswith(
        "late_output.jsonl:1: field 'output' missing (fields seen: instruction)"
    )


def test_datasets_folder_streams_like_load(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    rows = [{"instruction": "Add", "input": str(i), "output": str(i + 1)} for i in range(7)]
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    assert_same(folder, chunk=3)


@pytest.mark.parametrize(
    "name", ["self_instruct_seed_tasks.jsonl", "alpaca_5000.json", "text_davinci_003_predictions.jsonl"]
)
def test_real_files_stream_like_load(name: str) -> None:
    # seed tasks: the nested Self-Instruct 'instances' list
    assert_same(data(name), chunk=97)


def test_chat_and_explicit_fields_stream_like_load(tmp_path: Path) -> None:
    chat = [
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
        for i in range(5)
    ]
    assert_same(write(tmp_path / "chat.jsonl", chat), chunk=2)
    nested = [{"meta": {"q": f"q{i}"}, "a": [f"x{i}", "y"]} for i in range(5)]
    path = write(tmp_path / "nested.jsonl", nested)
    assert_same(path, chunk=2, text_fields=["meta.q", "a.*"])


def test_records_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n  \n{"text": "c"}\n', encoding="utf-8")
    chunks = list(iter_records(path, 2))
    assert [[n for n, _ in c] for c in chunks] == [[1, 3], [5]]
    assert [n for c in iter_records(write(tmp_path / "x.json", [{"text": "a"}] * 3), 5) for n, _ in c] == [
        1,
        2,
        3,
    ]
    assert (
        location(path, 3) == f"{path}:3"
        and location(tmp_path / "x.json", 2) == f"{tmp_path / 'x.json'}:record 2"
    )


def test_extract_is_the_loaders_rule(tmp_path: Path) -> None:
    recipe = recipe_for(["instruction", "input", "output"])
    got = extract({"instruction": "Sum", "input": " ", "output": "5"}, recipe, where="f:1")
    assert got == ("Sum\n5", "Sum", "5", "")
    with pytest.raises(AuditorError, match=r"^f:9: field 'output' is a number \(5\) \(expected a string\)$"):
        extract({"instruction": "Sum", "output": 5}, recipe, where="f:9")


BAD = [
    ('{"text": "fine"}\n{"text": 5}\n', r"bad.jsonl:2: field 'text' is a number \(5\)"),
    ('{"text": "fine"}\n{oops\n', r"bad.jsonl:2: malformed JSON \(Expecting property name"),
    ('{"text": "fine"}\n[1]\n', r"bad.jsonl:2: expected a JSON object, found a list"),
    (
        '{"text": "a", "m": {"a": 1}}\n{"text": "b", "m": [1]}\n',
        r"bad.jsonl:2: field 'm' is a list here but an object",
    ),
    (
        '{"text": "a", "m": 1}\n{"text": "b", "m": true}\n',
        r"bad.jsonl:2: field 'm' is a boolean here but a number",
    ),
    ("", r"bad.jsonl: no records \(empty file\)"),
    ("{}\n{}\n", r"bad.jsonl:1: record has no fields"),
    ('{"text": "ok"}\n{"text": "   "}\n', r"bad.jsonl:2: field 'text' is empty"),
    (
        '{"prompt": "a", "answer": "b"}\n',
        r"bad.jsonl: no text field recognised \(fields seen: prompt, answer;",
    ),
]


def test_values_polars_writes_as_text_are_accepted_alike(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a", "m": {"a": 1}}\n{"text": "b", "m": "s"}\n{"text": "c", "m": [2]}\n')
    assert_same(path, chunk=1)


@pytest.mark.parametrize(("content", "message"), BAD)
def test_one_set_of_error_messages(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(AuditorError, match=message) as loaded:
        load(path)
    with pytest.raises(AuditorError, match=message) as stream:
        streamed(path, 1)
    assert str(loaded.value) == str(stream.value)


def test_invalid_utf8_is_named_alike(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(AuditorError) as loaded:
        load(path)
    with pytest.raises(AuditorError) as stream:
        streamed(path, 1)
    assert str(loaded.value) == str(stream.value) and ":2: invalid UTF-8 byte 0xe9" in str(stream.value)


def test_input_info_says_how_records_were_read(tmp_path: Path) -> None:
    from auditor.types import InputInfo

    alpaca = load(write(tmp_path / "a.jsonl", ALPACA_LATE_INPUT)).info()
    assert alpaca.to_dict()["fields"] == {
        "text": ["instruction", "input", "output"],
        "prompt": ["instruction", "input"],
        "response": ["output"],
        "unread": [],
    }
    plain = load(write(tmp_path / "t.jsonl", [{"text": "a", "output": "b"}])).info()
    assert plain.to_dict()["fields"] == {"text": ["text"], "prompt": [], "response": [], "unread": []}
    assert InputInfo.from_dict(alpaca.to_dict()) == alpaca
    old = {"path": "x", "n_records": 1, "sha256": "0" * 64}  # a report from before the field
    assert InputInfo.from_dict(old).text_fields == ()

"""auditor.io: every format round-trips, shapes are recognised, bad input is named by line."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from io import StringIO
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.io import file_sha256, load
from auditor.textutil import batch_from_texts, content_hash, default_ids, short_id
from auditor.types import AuditorError
from tests.helpers import data


def write_jsonl(path: Path, records: list[Any], blank_after: tuple[int, ...] = ()) -> Path:
    """One JSON value per line; an empty line after each index in ``blank_after``."""
    out = []
    for i, r in enumerate(records):
        out.append(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False))
        if i in blank_after:
            out.append("")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def error_of(path: Path, **kwargs: Any) -> str:
    with pytest.raises(AuditorError) as info:
        load(path, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------------- formats round-trip

RECORDS = [
    {"id": "a", "text": "first record"},
    {"id": "b", "text": "second record\nwith two lines"},
    {"id": "c", "text": 'third, with a comma and "quotes"'},
]


def _expect(batch: Any, lines: tuple[int, ...]) -> None:
    assert batch.ids == ("a", "b", "c")
    assert batch.texts == tuple(r["text"] for r in RECORDS)
    assert batch.hashes == tuple(content_hash(r["text"]) for r in RECORDS)
    assert batch.lines == lines
    assert batch.text_fields == ("text",)
    assert batch.prompts is None and batch.responses is None


def test_jsonl_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    pl.DataFrame(RECORDS).write_ndjson(p)
    b = load(p, id_field="id")
    _expect(b, (1, 2, 3))
    assert b.path == str(p)
    assert b.sha256 == hashlib.sha256(p.read_bytes()).hexdigest() == file_sha256(p)


def test_jsonl_gz_roundtrip(tmp_path: Path) -> None:
    plain = tmp_path / "d.jsonl"
    write_jsonl(plain, RECORDS, blank_after=(0,))
    p = tmp_path / "d.jsonl.gz"
    p.write_bytes(gzip.compress(plain.read_bytes()))
    b = load(p, id_field="id")
    _expect(b, (1, 3, 4))
    assert b.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_json_array_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    pl.DataFrame(RECORDS).write_json(p)
    _expect(load(p, id_field="id"), (1, 2, 3))


def test_csv_roundtrip_lines_count_quoted_newlines(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    pl.DataFrame(RECORDS).write_csv(p)
    # record b spans lines 3-4, so c starts on line 5
    _expect(load(p, id_field="id"), (2, 3, 5))


def test_csv_blank_lines_and_integer_like_cells_stay_strings(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text('\nid,text\n007,hello\n\n008,"multi\nline"\n\n009,world\n\n', encoding="utf-8")
    b = load(p, id_field="id")
    assert b.ids == ("007", "008", "009")
    assert b.texts == ("hello", "multi\nline", "world")
    assert b.lines == (3, 5, 8)


def test_parquet_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "d.parquet"
    pl.DataFrame(RECORDS).write_parquet(p)
    _expect(load(p, id_field="id"), (1, 2, 3))


def test_datasets_folder_roundtrip(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    ds = datasets.Dataset.from_list([*RECORDS, {"id": "z", "text": "dropped"}])
    ds.select([0, 1, 2]).save_to_disk(str(folder))
    b = load(folder, id_field="id")
    _expect(b, (1, 2, 3))
    assert b.sha256 == file_sha256(folder)
    # a DatasetDict with one split is read as that split
    folder2 = tmp_path / "dd"
    datasets.DatasetDict({"train": ds.select([0, 1, 2])}).save_to_disk(str(folder2))
    _expect(load(folder2, id_field="id"), (1, 2, 3))


def test_file_sha256_of_folder_tracks_names_and_contents(tmp_path: Path) -> None:
    d = tmp_path / "f"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("x")
    (d / "sub" / "b.txt").write_text("y")
    h1 = file_sha256(d)
    (d / "sub" / "b.txt").write_text("z")
    h2 = file_sha256(d)
    (d / "sub" / "b.txt").rename(d / "sub" / "c.txt")
    h3 = file_sha256(d)
    assert len({h1, h2, h3}) == 3
    (d / "sub" / "c.txt").rename(d / "sub" / "b.txt")
    assert file_sha256(d) == h2


# ---------------------------------------------------------------------------- paths and shapes


def test_dotted_index_and_star_paths(tmp_path: Path) -> None:
    recs = [
        {
            "meta": {"title": "T1"},
            "instances": [{"input": "", "output": "o1"}, {"input": "i2", "output": "o2"}],
        },
        {"meta": {"title": "T2"}, "instances": [{"input": "x", "output": "p1"}]},
    ]
    p = write_jsonl(tmp_path / "d.jsonl", recs)
    b = load(p, text_fields=["meta.title", "instances.*.input", "instances.*.output"])
    # the empty input of the first instance is skipped in the join
    assert b.texts == ("T1\ni2\no1\no2", "T2\nx\np1")
    assert b.text_fields == ("meta.title", "instances.*.input", "instances.*.output")
    assert b.prompts is None and b.responses is None
    assert load(p, text_fields=["instances.0.output"]).texts == ("o1", "p1")
    msg = error_of(p, text_fields=["instances.1.output"])
    assert msg.startswith(f"{p}:2: field 'instances.1.output' missing")


def test_key_with_dots_wins_over_descending(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("meta.text,other\nhello,x\n", encoding="utf-8")
    assert load(p, text_fields=["meta.text"]).texts == ("hello",)


def test_list_of_strings_needs_star(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"tags": ["a", "", "b"]}])
    assert load(p, text_fields=["tags.*"]).texts == ("a\nb",)
    msg = error_of(p, text_fields=["tags"])
    assert msg.startswith(f"{p}:1: field 'tags' is a list") and "tags.*" in msg


def test_auto_text_wins(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "i", "text": "t"}])
    b = load(p)
    assert b.texts == ("t",) and b.text_fields == ("text",) and b.prompts is None


def test_auto_chat_messages(tmp_path: Path) -> None:
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    p = write_jsonl(tmp_path / "d.jsonl", [{"messages": msgs}, {"messages": msgs[:2]}])
    b = load(p)
    assert b.text_fields == ("messages",)
    assert b.texts == ("system: be brief\nuser: hi\nassistant: hello", "system: be brief\nuser: hi")
    assert b.prompts == ("system: be brief\nuser: hi", "system: be brief\nuser: hi")
    assert b.responses == ("hello", "")


def test_auto_chat_bad_content_is_named(tmp_path: Path) -> None:
    p = write_jsonl(
        tmp_path / "d.jsonl",
        [{"messages": [{"role": "user", "content": "a"}]}, {"messages": [{"role": "user", "content": 3}]}],
    )
    msg = error_of(p)
    assert msg.startswith(f"{p}:2: field 'messages.0.content' is a number (3)")


def test_auto_instruction_input_output(tmp_path: Path) -> None:
    recs = [
        {"instruction": "Add", "input": "2+2", "output": "4"},
        {"instruction": "Greet", "input": "", "output": "Hi"},
    ]
    b = load(write_jsonl(tmp_path / "d.jsonl", recs))
    assert b.text_fields == ("instruction", "input", "output")
    assert b.texts == ("Add\n2+2\n4", "Greet\nHi")
    assert b.prompts == ("Add\n2+2", "Greet")
    assert b.responses == ("4", "Hi")


@pytest.mark.parametrize("out", ["response", "completion"])
def test_auto_instruction_with_other_response_names(tmp_path: Path, out: str) -> None:
    b = load(write_jsonl(tmp_path / "d.jsonl", [{"instruction": "Q", out: "A"}]))
    assert b.text_fields == ("instruction", out)
    assert (b.texts, b.prompts, b.responses) == (("Q\nA",), ("Q",), ("A",))


def test_auto_instruction_instances(tmp_path: Path) -> None:
    recs = [
        {"id": "s0", "instruction": "Sum", "instances": [{"input": "1 2", "output": "3"}]},
        {"id": "s1", "instruction": "Say hi", "instances": [{"input": "", "output": "hi"}, {"output": "yo"}]},
    ]
    b = load(write_jsonl(tmp_path / "d.jsonl", recs), id_field="id")
    assert b.text_fields == ("instruction", "instances.*.input", "instances.*.output")
    assert b.texts == ("Sum\n1 2\n3", "Say hi\nhi\nyo")
    assert b.prompts == ("Sum\n1 2", "Say hi")
    assert b.responses == ("3", "hi\nyo")
    assert b.ids == ("s0", "s1")


@pytest.mark.parametrize("out", ["completion", "response"])
def test_auto_prompt_completion(tmp_path: Path, out: str) -> None:
    b = load(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "P", out: "C"}]))
    assert b.text_fields == ("prompt", out)
    assert (b.texts, b.prompts, b.responses) == (("P\nC",), ("P",), ("C",))


def test_auto_unrecognised_names_fields_seen(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    msg = error_of(p)
    assert msg.startswith(f"{p}: no text field recognised")
    assert "fields seen: question, answer" in msg


REAL = {
    "alpaca_5000.json": (5000, ("instruction", "input", "output"), (1, 2, 3)),
    "self_instruct_seed_tasks.jsonl": (
        175,
        ("instruction", "instances.*.input", "instances.*.output"),
        (1, 2, 3),
    ),
    "user_oriented_instructions.jsonl": (
        252,
        ("instruction", "instances.*.input", "instances.*.output"),
        (1, 2, 3),
    ),
    "davinci_self_instruct_predictions.jsonl": (252, ("instruction", "input", "response"), (1, 2, 3)),
    "text_davinci_003_predictions.jsonl": (252, ("instruction", "input", "response"), (1, 2, 3)),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_data_autodetect(name: str) -> None:
    path = data(name)
    n, fields, first_lines = REAL[name]
    b = load(path)
    assert len(b) == n
    assert b.text_fields == fields
    assert b.lines[:3] == first_lines and b.lines[-1] == n
    assert b.prompts is not None and b.responses is not None
    assert all(t.strip() for t in b.texts)
    assert len(set(b.ids)) == n
    records = json.loads(path.read_text()) if path.suffix == ".json" else None
    if records is not None:  # spot-check one record against the stdlib parse
        r = records[10]
        assert b.texts[10] == "\n".join(s for s in (r["instruction"], r["input"], r["output"]) if s.strip())


def test_real_seed_tasks_with_id_field() -> None:
    path = data("self_instruct_seed_tasks.jsonl")
    b = load(path, id_field="id", text_fields=["instruction"])
    assert b.ids[:2] == ("seed_task_0", "seed_task_1")
    assert b.prompts is None


# ---------------------------------------------------------------------------- ids


def test_default_ids_disambiguate_repeats_like_batch_from_texts(tmp_path: Path) -> None:
    texts = ["same", "other", "same", "  same  ", "same"]
    b = load(write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts]))
    base = short_id(content_hash("same"))
    assert b.ids == batch_from_texts(texts).ids
    assert b.ids[0] == base and b.ids[2:] == (f"{base}-2", f"{base}-3", f"{base}-4")
    assert b.ids == tuple(default_ids(b.hashes))


def test_integer_ids_allowed(tmp_path: Path) -> None:
    b = load(
        write_jsonl(tmp_path / "d.jsonl", [{"id": 7, "text": "a"}, {"id": "8", "text": "b"}]), id_field="id"
    )
    assert b.ids == ("7", "8")


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    recs = [{"id": "x", "text": "a"}, {"id": "y", "text": "b"}, {"id": "x", "text": "c"}]
    p = write_jsonl(tmp_path / "d.jsonl", recs, blank_after=(0,))
    msg = error_of(p, id_field="id")
    assert msg.startswith(f"{p}:4: field 'id' value 'x'") and "line 1" in msg
    pj = tmp_path / "d.json"
    pj.write_text(json.dumps(recs))
    msg = error_of(pj, id_field="id")
    assert msg.startswith(f"{pj}:record 3: field 'id'") and "record 1" in msg


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (1.5, "is a number (1.5)"),
        (None, "is null"),
        ("", "is empty"),
        (True, "is a boolean"),
        ({"a": 1}, "is an object"),
    ],
)
def test_bad_ids(tmp_path: Path, value: Any, problem: str) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"id": "ok", "text": "a"}, {"id": value, "text": "b"}])
    assert error_of(p, id_field="id").startswith(f"{p}:2: field 'id' {problem}")


def test_missing_id_field(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"id": "ok", "text": "a"}, {"text": "b"}])
    assert error_of(p, id_field="id") == f"{p}:2: field 'id' missing (fields seen: text)"


# ---------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.jsonl"
    assert error_of(p).startswith(f"{p}: file not found")


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    p = tmp_path / "d.txt"
    p.write_text("hello")
    msg = error_of(p)
    assert msg.startswith(f"{p}: unknown file type '.txt'")
    for ext in (".jsonl", ".json", ".csv", ".parquet", "save_to_disk"):
        assert ext in msg


def test_plain_folder_is_not_a_dataset(tmp_path: Path) -> None:
    assert "not a datasets save_to_disk folder" in error_of(tmp_path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("e.jsonl", "\n  \n\n"), ("e.json", "[]"), ("e.json", "  "), ("e.csv", "text,id\n"), ("e.csv", "")],
)
def test_empty_dataset(tmp_path: Path, name: str, content: str) -> None:
    p = tmp_path / name
    p.write_text(content)
    assert "no records" in error_of(p)


def test_empty_parquet(tmp_path: Path) -> None:
    p = tmp_path / "e.parquet"
    pl.DataFrame({"text": []}, schema={"text": pl.String}).write_parquet(p)
    assert "no records" in error_of(p)


def test_malformed_json_line_number(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}, '{"text": "c"', {"text": "d"}], (0,))
    msg = error_of(p)
    assert msg.startswith(f"{p}:4: malformed JSON")


def test_jsonl_line_not_an_object(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, "[1, 2]"])
    assert error_of(p).startswith(f"{p}:2: expected a JSON object, found a list")


def test_malformed_json_array_line_number(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text('[\n{"text": "a"},\n{"text" "b"}\n]')
    assert error_of(p).startswith(f"{p}:3: malformed JSON")


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ('{"text": "a"}\n{"text": "b"}\n', "found an object"),
        ("5", "found a number"),
        ('[{"text": "a"}, 3]', "found a number"),
    ],
)
def test_json_must_be_array_of_objects(tmp_path: Path, content: str, found: str) -> None:
    p = tmp_path / "d.json"
    p.write_text(content)
    msg = error_of(p)
    assert found in msg
    assert "JSON array of objects" in msg or "expected a JSON object" in msg


def test_missing_field_names_line_and_fields_seen(tmp_path: Path) -> None:
    recs = [{"instruction": "a", "output": "b"}, {"instruction": "c", "input": "x"}]
    p = write_jsonl(tmp_path / "d.jsonl", recs, blank_after=(0,))
    assert error_of(p) == f"{p}:3: field 'output' missing (fields seen: instruction, input)"
    pj = tmp_path / "d.json"
    pj.write_text(json.dumps(recs))
    assert error_of(pj) == f"{pj}:record 2: field 'output' missing (fields seen: instruction, input)"


def test_explicit_field_missing_everywhere(tmp_path: Path) -> None:
    p = tmp_path / "d.parquet"
    pl.DataFrame({"a": ["x"], "b": ["y"]}).write_parquet(p)
    assert error_of(p, text_fields=["body"]) == f"{p}:record 1: field 'body' missing (fields seen: a, b)"


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "a"}\n\n{"text": "caf\xe9"}\n')
    msg = error_of(p)
    assert msg.startswith(f"{p}:3: invalid UTF-8 byte 0xe9")
    pc = tmp_path / "d.csv"
    pc.write_bytes(b"text\nok\nbad \xff\n")
    assert error_of(pc).startswith(f"{pc}:3: invalid UTF-8")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (5, "is a number (5)"),
        (2.5, "is a number (2.5)"),
        (None, "is null"),
        ({"a": 1}, "is an object"),
        (True, "is a boolean (true)"),
        (["x", "y"], "is a list"),
    ],
)
def test_non_string_text_field(tmp_path: Path, value: Any, problem: str) -> None:
    # the bad value sits among strings, where polars would silently turn it into text
    recs = [{"text": "fine"}] * 3 + [{"text": value}] + [{"text": "also fine"}]
    p = write_jsonl(tmp_path / "d.jsonl", recs, blank_after=(1,))
    assert error_of(p).startswith(f"{p}:5: field 'text' {problem}")
    pj = tmp_path / "d.json"
    pj.write_text(json.dumps(recs))
    assert error_of(pj).startswith(f"{pj}:record 4: field 'text' {problem}")


def test_non_string_nested_value(tmp_path: Path) -> None:
    recs = [
        {"instruction": "a", "instances": [{"input": "", "output": "x"}]},
        {"instruction": "b", "instances": [{"input": "", "output": "y"}, {"input": "", "output": 42}]},
    ]
    p = write_jsonl(tmp_path / "d.jsonl", recs)
    assert error_of(p).startswith(f"{p}:2: field 'instances.1.output' is a number (42)")


def test_non_string_column_in_parquet(tmp_path: Path) -> None:
    p = tmp_path / "d.parquet"
    pl.DataFrame({"text": ["a", None], "n": [1, 2]}).write_parquet(p)
    assert error_of(p).startswith(f"{p}:record 2: field 'text' is null")
    assert error_of(p, text_fields=["n"]).startswith(f"{p}:record 1: field 'n' is a number (1)")


def test_json_like_strings_are_still_text(tmp_path: Path) -> None:
    texts = ["5", "-1.5e3", "true", "[1, 2]", '{"a": 1}', "plain"]
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    assert load(p).texts == tuple(texts)
    pj = tmp_path / "d.json"
    pj.write_text(json.dumps([{"text": t} for t in texts]))
    assert load(pj).texts == tuple(texts)


def test_empty_text_after_join(tmp_path: Path) -> None:
    recs = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": " ", "input": "", "output": ""}]
    p = write_jsonl(tmp_path / "d.jsonl", recs)
    msg = error_of(p)
    assert msg.startswith(f"{p}:2: fields 'instruction', 'input', 'output' are all empty")
    p2 = write_jsonl(tmp_path / "e.jsonl", [{"text": "a"}, {"text": "  \n"}])
    assert error_of(p2).startswith(f"{p2}:2: field 'text' is empty")


def test_type_conflict_is_located(tmp_path: Path) -> None:
    # polars cannot unify a list with an object: the stdlib scan names the line
    p = write_jsonl(
        tmp_path / "d.jsonl", [{"text": "a", "m": [1]}, {"text": "b"}, {"text": "c", "m": {"x": 1}}]
    )
    msg = error_of(p)
    assert msg.startswith(f"{p}:3: field 'm' is an object here but a list")


def test_csv_ragged_row_line(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("text,id\na,1\nb,2\nc,3,extra\n")
    assert error_of(p).startswith(f"{p}:4: row has 3 cells")


def test_bad_gzip(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl.gz"
    p.write_bytes(b"not gzip")
    assert "cannot decompress gzip" in error_of(p)


def test_error_messages_stay_one_line(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"odd\nkey": "v"}])
    msg = error_of(p, text_fields=["text"])
    assert "odd\\nkey" in msg


# ---------------------------------------------------------------------------- properties

_TEXT = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(_TEXT, st.integers(0, 2), st.booleans()), min_size=1, max_size=12),
    with_ids=st.booleans(),
)
def test_jsonl_roundtrip_property(tmp_path: Path, rows: list[tuple[str, int, bool]], with_ids: bool) -> None:
    """Random texts with blank lines between them load back with the same texts, ids and lines."""
    out: list[str] = []
    lines: list[int] = []
    for k, (text, blanks, crlf) in enumerate(rows):
        rec: dict[str, Any] = {"text": text, "id": f"r{k}"} if with_ids else {"text": text}
        out.append(json.dumps(rec, ensure_ascii=bool(k % 2)) + ("\r" if crlf else ""))
        lines.append(len(out))
        out.extend(" " * (j % 2) for j in range(blanks))
    p = tmp_path / "prop.jsonl"
    p.write_text("\n".join(out), encoding="utf-8")
    b = load(p, id_field="id" if with_ids else None)
    texts = tuple(t for t, _, _ in rows)
    assert b.texts == texts
    assert b.lines == tuple(lines)
    assert b.ids == (tuple(f"r{k}" for k in range(len(rows))) if with_ids else batch_from_texts(texts).ids)


_CELL = st.text(alphabet=st.sampled_from('ab ,"\n'), min_size=1, max_size=8).filter(lambda s: s.strip())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.tuples(_CELL, _CELL), min_size=1, max_size=8))
def test_csv_lines_match_stdlib_reader(tmp_path: Path, cells: list[tuple[str, str]]) -> None:
    """CSV record line numbers agree with the stdlib reader, quoted newlines and all."""
    buf = StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "note"])
    writer.writerows(cells)
    p = tmp_path / "prop.csv"
    p.write_text(buf.getvalue(), encoding="utf-8")
    reader = csv.reader(StringIO(buf.getvalue(), newline=""))
    next(reader)
    starts, prev_end = [], reader.line_num
    for _ in reader:
        starts.append(prev_end + 1)
        prev_end = reader.line_num
    b = load(p, text_fields=["text", "note"])
    assert b.lines == tuple(starts)
    assert b.texts == tuple("\n".join(c for c in row if c.strip()) for row in cells)


def test_messages_follow_file_line_pattern(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"body": "b"}])
    assert re.fullmatch(rf"{re.escape(str(p))}:2: field 'text' missing \(fields seen: body\)", error_of(p))


_PART = st.text(alphabet=st.sampled_from(["a", "7", " ", "\u3000", "\x1c", "\n", "[", "-"]), max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_PART, _PART, _PART), min_size=1, max_size=8))
def test_columnar_and_per_record_paths_agree(tmp_path: Path, rows: list[tuple[str, str, str]]) -> None:
    """Top-level string fields (read in bulk) and nested ones (read record by record) give
    the same texts, prompts and responses; blank parts are skipped, all-blank is an error."""
    flat = [{"instruction": a, "input": b, "output": c} for a, b, c in rows]
    nested = [{"r": r} for r in flat]
    pf = write_jsonl(tmp_path / "flat.jsonl", flat)
    pn = write_jsonl(tmp_path / "nested.jsonl", nested)
    fields = ["r.instruction", "r.input", "r.output"]
    expected = ["\n".join(s for s in row if s.strip()) for row in rows]
    if not all(expected):
        bad = expected.index("") + 1
        assert error_of(pf).startswith(f"{pf}:{bad}: fields 'instruction', 'input', 'output' are all empty")
        assert error_of(pn, text_fields=fields).startswith(f"{pn}:{bad}: fields 'r.instruction'")
        return
    a, b = load(pf), load(pn, text_fields=fields)
    assert a.texts == b.texts == tuple(expected)
    assert a.responses == tuple(c if c.strip() else "" for _, _, c in rows)
    assert a.prompts == tuple("\n".join(s for s in (x, y) if s.strip()) for x, y, _ in rows)

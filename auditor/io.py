"""Read a file of records into a Batch: the only module that knows file formats.

Formats: JSON Lines (``.jsonl``, ``.ndjson``), JSON arrays of objects (``.json``) and CSV
(``.csv``), each optionally gzipped (``.gz``); Parquet (``.parquet``); and folders written by
``datasets.Dataset.save_to_disk``.  Polars (and ``datasets`` for folders) do the parsing.
The stdlib ``json``/``csv`` modules only run after something went wrong, to find and name
the bad line, or to re-read one record whose types polars had to unify (see ``_extract``).

Every user error is an ``AuditorError`` with a one-line message
``FILE:LINE: field 'x' <problem> (<expected / fields seen>)``.  Formats without lines
(JSON arrays, Parquet, datasets) say ``FILE:record N`` instead, and ``Batch.lines`` holds
the 1-based record number for them.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np
import polars as pl

from auditor.fsutil import sha256_tree
from auditor.shards import shards_of
from auditor.textutil import content_hash, default_ids
from auditor.types import AuditorError, Batch

SUPPORTED = (
    ".jsonl, .ndjson, .json, .csv (each also gzipped, .gz), .parquet, .arrow, "
    "a folder written by datasets.Dataset.save_to_disk, a folder of such shards or a glob"
)
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_RESPONSE_FIELDS = ("output", "response", "completion")
_AUTO_SHAPES = (
    "'text'; 'messages'; 'instruction' (+ 'input', + 'output'/'response'/'completion' or "
    "'instances'); 'prompt' + 'completion'/'response'; or pass text_fields"
)
# What polars writes when it unifies a non-string JSON value into a string column.
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_COERCED_RE = r"(?s)^(?:[\[{].*|true|false|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)$"
# Python's whitespace (str.isspace), spelled out so polars and Python agree on "blank".
_BLANK = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# pyo3 panics derive from BaseException; polars re-exports the type.
_POLARS_ERRORS: tuple[type[BaseException], ...] = (
    Exception,
    getattr(pl.exceptions, "PanicException", Exception),
)


# ---------------------------------------------------------------------------- public API


def load(
    path: str | Path,
    text_fields: Sequence[str] | None = None,
    id_field: str | None = None,
) -> Batch:
    """Load the records of one file (or ``save_to_disk`` folder) into a Batch.

    ``text_fields``: dotted paths whose string values, joined with newlines (empty ones
    skipped), make each record's text: ``instances.0.output`` indexes a list and
    ``instances.*.output`` joins all its items.  Without it the common shapes are
    recognised, in this order: ``text``; chat ``messages``; ``instruction`` (+ ``input``,
    + ``output``/``response``/``completion``, or the Self-Instruct ``instances`` list);
    ``prompt`` + ``completion``/``response``.  Recognised prompt/response shapes also fill
    ``Batch.prompts`` and ``Batch.responses``; explicit ``text_fields`` leave them None.

    ``id_field``: path of each record's id (a non-empty string or an integer; unique).
    Without it a record's id is the short content hash, suffixed ``-2``, ``-3`` ... for
    repeated texts.  Raises AuditorError, with file and line, for any bad input.
    """
    try:
        return _load(path, text_fields, id_field)
    except AuditorError as e:
        msg = str(e)
        if "\n" not in msg and "\r" not in msg:
            raise
        raise AuditorError(_one_line(msg)) from None


def _load(path: str | Path, text_fields: Sequence[str] | None, id_field: str | None) -> Batch:
    label = str(path)
    fields = _as_fields(text_fields)
    if id_field is not None and not id_field:
        raise AuditorError("id_field: empty field name (expected a field path such as 'id')")
    shards = shards_of(path)
    if shards is not None:
        return _load_shards(label, shards, fields, id_field)
    table, digest = _read(Path(path), label)
    if table.frame.height == 0:
        raise AuditorError(f"{label}: no records (expected at least one)")
    recipe = recipe_for(table.frame.columns, fields, label=label)
    texts, prompts, responses, given_ids = _extract(table, recipe, id_field, label)
    hashes = tuple(content_hash(t) for t in texts)
    if given_ids is None:
        ids = tuple(default_ids(hashes))
    else:
        _check_unique(given_ids, table, id_field or "", label)
        ids = tuple(given_ids)
    return Batch(
        path=label,
        sha256=digest,
        ids=ids,
        texts=tuple(texts),
        hashes=hashes,
        lines=tuple(table.lines),
        text_fields=recipe.text_fields,
        prompts=tuple(prompts) if recipe.paired else None,
        responses=tuple(responses) if recipe.paired else None,
        prompt_fields=recipe.prompt_fields,
        response_fields=recipe.response_fields,
        unread_fields=unread_text_fields(table.frame, recipe.text_fields, id_field),
    )


def unread_text_fields(frame: pl.DataFrame, read: Sequence[str], id_field: str | None = None) -> tuple[str, ...]:
    """Top-level fields that hold free text in most records but were not read.

    "Free text": a string that contains whitespace, in at least half of the records (ids,
    labels and template names are single tokens and do not count).  A file whose answers
    sit under a field the recipe does not know (``answer`` instead of ``output``) then
    says so in the report, instead of being audited without its answers."""
    roots = {f.split(".", 1)[0] for f in read}
    if id_field:
        roots.add(id_field.split(".", 1)[0])
    n = frame.height
    out = []
    for name, dtype in zip(frame.columns, frame.dtypes):
        if name in roots or dtype != pl.String or n == 0:
            continue
        col = frame.get_column(name)
        free = int(col.str.contains(r"\s").fill_null(False).sum())
        if free * 2 >= n:
            out.append(name)
    return tuple(out)


def file_sha256(path: str | Path) -> str:
    """sha256 hex of a file's bytes; for a folder, of its sorted relative paths and contents;
    for a glob, of the matched shards' paths and contents."""
    try:
        shards = shards_of(path)
    except AuditorError:
        if not Path(path).is_dir():
            raise
        shards = None  # a folder that is not an input: hash everything in it
    if shards is not None:
        return _shards_digest(shards, [file_sha256(s) for s in shards])
    p = Path(path)
    if not p.exists():
        raise AuditorError(f"{path}: file not found (no such file or folder)")
    try:
        return sha256_tree(p)
    except OSError as e:
        raise AuditorError(f"{path}: cannot read ({e.strerror or e})") from None


# ---------------------------------------------------------------------------- streaming

Records = list[tuple[int, dict[str, Any]]]


def location(path: str | Path, n: int) -> str:
    """How errors name record ``n`` of ``path``: ``FILE:LINE`` for line formats (JSONL, CSV),
    ``FILE:record N`` for the others, exactly as ``load`` names it."""
    return f"{_where_prefix(path)}{n}"


def _where_prefix(path: str | Path) -> str:
    p = Path(path)
    by_line = not p.is_dir() and _format_of(p, str(path))[0] in ("jsonl", "csv")
    return f"{path}:" if by_line else f"{path}:record "


def iter_shards(path: str | Path) -> tuple[Path, ...]:
    """The files an input is read from, in order: its shards for a folder of shards or a
    glob (see ``auditor.shards``), else the path itself."""
    shards = shards_of(path)
    return shards if shards is not None else (Path(path),)


def iter_records(path: str | Path, chunk_size: int = 8192) -> Iterator[Records]:
    """The records of a file as ``(line or record number, record)`` pairs, ``chunk_size``
    at a time, with ``load``'s checks and error messages.

    JSON Lines (also gzipped), Parquet and Arrow are read incrementally, so memory is
    bounded by the chunk; the other formats have no cheap way to stop half way and are
    read whole first.  A folder of shards or a glob is read shard after shard; numbers
    count within each shard (``iter_texts`` names the shard in its errors).
    """
    if chunk_size < 1:
        raise AuditorError(f"chunk_size: {chunk_size} (expected at least 1)")
    shards = shards_of(path)
    if shards is not None:
        for shard in shards:
            yield from iter_records(shard, chunk_size)
        return
    p, label = Path(path), str(path)
    if not p.exists():
        raise AuditorError(f"{label}: file not found (no such file or folder)")
    kind = "dir" if p.is_dir() else _format_of(p, label)[0]
    if kind == "jsonl":
        yield from _jsonl_stream(p, label, chunk_size)
    elif kind == "parquet":
        yield from _parquet_stream(p, label, chunk_size)
    elif kind == "arrow":
        yield from _arrow_stream(p, label, chunk_size)
    else:
        yield from _table_stream(_read(p, label)[0], label, chunk_size)


def fields_of(path: str | Path) -> tuple[str, ...]:
    """Every top-level field of a file's records, in first-seen order: what ``load`` sees
    as its columns.  JSON Lines are scanned once (and every line checked), Parquet and
    Arrow give their schema, other formats are read.  For shards: the union over all of
    them, so the recipe never depends on which shard came first."""
    shards = shards_of(path)
    if shards is not None:
        seen: dict[str, None] = {}
        for shard in shards:
            seen.update(dict.fromkeys(fields_of(shard)))
        return tuple(seen)
    p, label = Path(path), str(path)
    if not p.exists():
        raise AuditorError(f"{label}: file not found (no such file or folder)")
    kind = "dir" if p.is_dir() else _format_of(p, label)[0]
    if kind == "jsonl":
        return _jsonl_fields(p, label)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            names = tuple(pq.read_schema(p).names)
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
            raise AuditorError(f"{label}: cannot read Parquet ({_first_line(e)})") from None
        return names
    if kind == "arrow":
        with _arrow_reader(p, label) as reader:
            return tuple(reader.schema.names)
    table = _read(p, label)[0]
    if table.frame.height == 0:
        raise AuditorError(f"{label}: no records (expected at least one)")
    return tuple(table.frame.columns)


def iter_texts(
    path: str | Path,
    text_fields: Sequence[str] | str | None = None,
    *,
    chunk_size: int = 8192,
    recipe: Recipe | None = None,
) -> Iterator[list[str]]:
    """The texts ``load`` would make of a file (or of every shard of a folder of shards
    or a glob, in order), ``chunk_size`` records at a time.

    The recipe comes from the fields of the whole input (``fields_of``), never from the
    first chunk, so a field that first appears late gives the same text here and in
    ``load``, and what ``auditor embed`` caches is found again by ``auditor audit``.
    ``recipe`` (from ``recipe_of``) is for a caller that reads one shard of a larger
    input, e.g. a Ray worker: the whole input's recipe, not this shard's.
    """
    if recipe is None:
        recipe = recipe_of(path, text_fields)
    for shard in iter_shards(path):
        where = _where_prefix(shard)
        for records in iter_records(shard, chunk_size):
            yield [extract(rec, recipe, where=f"{where}{n}").text for n, rec in records]


def recipe_of(path: str | Path, text_fields: Sequence[str] | str | None = None) -> Recipe:
    """The record -> text recipe ``load`` uses for ``path`` (a file, shard folder or glob)."""
    fields = _as_fields(text_fields)
    return recipe_for(() if fields else fields_of(path), fields, label=str(path))


def _table_stream(table: _Table, label: str, chunk_size: int) -> Iterator[Records]:
    frame = table.frame
    if frame.height == 0:
        raise AuditorError(f"{label}: no records (expected at least one)")
    for s in range(0, frame.height, chunk_size):
        rows = range(s, min(s + chunk_size, frame.height))
        if table.raw is not None:  # the exact parse, as load re-reads doubtful records
            yield [(table.lines[i], table.raw(i)) for i in rows]
        else:
            yield [(table.lines[i], frame.row(i, named=True)) for i in rows]


def _parquet_stream(p: Path, label: str, chunk_size: int) -> Iterator[Records]:
    import pyarrow.parquet as pq

    n = 0
    try:
        batches = pq.ParquetFile(p).iter_batches(batch_size=chunk_size)
        for batch in batches:
            recs = batch.to_pylist()
            yield [(n + i + 1, r) for i, r in enumerate(recs)]
            n += len(recs)
    except (OSError, ValueError) as e:
        raise AuditorError(f"{label}: cannot read Parquet ({_first_line(e)})") from None
    except Exception as e:
        if type(e).__module__.startswith("pyarrow"):
            raise AuditorError(f"{label}: cannot read Parquet ({_first_line(e)})") from None
        raise
    if n == 0:
        raise AuditorError(f"{label}: no records (expected at least one)")


class _ArrowReader:
    """An Arrow IPC file (random access) or stream (what ``datasets`` writes), opened for
    reading record batches in order."""

    def __init__(self, p: Path, label: str) -> None:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        self.label = label
        try:
            self._src = pa.memory_map(str(p), "r")
        except OSError as e:
            raise AuditorError(f"{label}: cannot read ({e.strerror or e})") from None
        reader: Any = None
        for opener in (ipc.open_file, ipc.open_stream):
            try:
                self._src.seek(0)
                reader = opener(self._src)
                break
            except Exception:  # noqa: BLE001 - try the other IPC layout
                continue
        if reader is None:
            self._src.close()
            raise AuditorError(f"{label}: cannot read Arrow (not an Arrow IPC file or stream)")
        self._reader = reader
        self.schema = reader.schema

    def batches(self) -> Iterator[Any]:
        r = self._reader
        try:
            if hasattr(r, "num_record_batches"):
                for i in range(r.num_record_batches):
                    yield r.get_batch(i)
            else:
                yield from r
        except Exception as e:
            if type(e).__module__.startswith("pyarrow") or isinstance(e, (OSError, ValueError)):
                raise AuditorError(f"{self.label}: cannot read Arrow ({_first_line(e)})") from None
            raise

    def __enter__(self) -> _ArrowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._src.close()


def _arrow_reader(p: Path, label: str) -> _ArrowReader:
    return _ArrowReader(p, label)


def _arrow_stream(p: Path, label: str, chunk_size: int) -> Iterator[Records]:
    n = 0
    with _arrow_reader(p, label) as reader:
        for batch in reader.batches():
            for s in range(0, batch.num_rows, chunk_size):
                recs = batch.slice(s, chunk_size).to_pylist()
                yield [(n + i + 1, r) for i, r in enumerate(recs)]
                n += len(recs)
    if n == 0:
        raise AuditorError(f"{label}: no records (expected at least one)")


def _jsonl_lines(p: Path, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of every non-blank line, checked as ``load`` checks them."""
    gz = p.name.lower().endswith(".gz")
    try:
        f = gzip.open(p, "rb") if gz else open(p, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise AuditorError(f"{label}: cannot read ({e.strerror or e})") from None
    with f:
        n = 0
        try:
            for n, raw in enumerate(f, 1):
                if n == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if not line or line.isspace():
                    continue
                yield n, _jsonl_record(line, label, n)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise AuditorError(f"{label}: cannot decompress gzip ({e})") from None
        except OSError as e:
            raise AuditorError(f"{label}: cannot read ({e.strerror or e})") from None


def _jsonl_record(line: bytes, label: str, n: int) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AuditorError(
            f"{label}:{n}: invalid UTF-8 byte 0x{line[e.start]:02x} at byte {e.start + 1} of the line "
            "(expected a UTF-8 text file)"
        ) from None
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise AuditorError(f"{label}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise AuditorError(f"{label}:{n}: malformed JSON (nested too deeply)") from None
    if not isinstance(rec, dict):
        raise AuditorError(f"{label}:{n}: expected a JSON object, found {_describe(rec)}")
    return rec


def _jsonl_fields(p: Path, label: str) -> tuple[str, ...]:
    keys: dict[str, None] = {}
    shape: Any = None
    first = 0
    for n, rec in _jsonl_lines(p, label):
        first = first or n
        keys.update(dict.fromkeys(rec))
        try:  # the same one-type-per-field rule load's parser enforces
            shape = _merge(shape, _shape(rec, "", True), "", True)
        except _Conflict as c:
            raise _conflict_error(f"{label}:{n}", c) from None
    if not first:
        raise AuditorError(f"{label}: no records (empty file)")
    if not keys:
        raise AuditorError(f"{label}:{first}: record has no fields (fields seen: none)")
    return tuple(keys)


def _jsonl_stream(p: Path, label: str, chunk_size: int) -> Iterator[Records]:
    buf: Records = []
    seen = False
    for item in _jsonl_lines(p, label):
        buf.append(item)
        seen = True
        if len(buf) >= chunk_size:
            yield buf
            buf = []
    if buf:
        yield buf
    if not seen:
        raise AuditorError(f"{label}: no records (empty file)")


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Table:
    """A parsed file: one frame row per record, its line (or record) number, and for JSON
    formats a way to re-parse record i exactly as written."""

    frame: pl.DataFrame
    lines: list[int]
    by_record: bool
    raw: Callable[[int], Any] | None = None
    # set only for the records of several shards read together (duplicate-id errors name
    # the shard of each record): shard index of each record, each shard's label and kind
    shards: list[int] | None = None
    shard_labels: tuple[str, ...] = ()
    shard_by_record: tuple[bool, ...] = ()

    def where(self, label: str, i: int) -> str:
        if self.shards is not None:
            k = self.shards[i]
            return _Table(self.frame, self.lines, self.shard_by_record[k]).where(self.shard_labels[k], i)
        n = self.lines[i]
        return f"{label}:record {n}" if self.by_record else f"{label}:{n}"

    def unit(self, i: int) -> str:
        if self.shards is not None:
            k = self.shards[i]
            unit = "record" if self.shard_by_record[k] else "line"
            return f"{self.shard_labels[k]} {unit} {self.lines[i]}"
        return f"record {self.lines[i]}" if self.by_record else f"line {self.lines[i]}"


def _format_of(path: Path, label: str) -> tuple[str, bool]:
    name = path.name.lower()
    gz = name.endswith(".gz")
    base = name[:-3] if gz else name
    for suffix, kind in _SUFFIXES.items():
        if base.endswith(suffix) and not (gz and kind in ("parquet", "arrow")):
            return kind, gz
    found = "".join(path.suffixes[-2:]) or "no extension"
    raise AuditorError(f"{label}: unknown file type '{found}' (supported: {SUPPORTED})")


def _read(p: Path, label: str) -> tuple[_Table, str]:
    if not p.exists():
        raise AuditorError(f"{label}: file not found (no such file or folder)")
    if p.is_dir():
        return _read_datasets_folder(p, label), file_sha256(p)
    kind, gz = _format_of(p, label)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise AuditorError(f"{label}: cannot read ({e.strerror or e})") from None
    digest = hashlib.sha256(data).hexdigest()
    if kind == "parquet":
        return _read_parquet(data, label), digest
    if kind == "arrow":
        return _read_arrow(p, label), digest
    if gz:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise AuditorError(f"{label}: cannot decompress gzip ({e})") from None
    data = _utf8(data, label)
    reader = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv}[kind]
    return reader(data, label), digest


def _utf8(data: bytes, label: str) -> bytes:
    """Check the bytes are UTF-8 (naming the line of the first bad byte); drop a BOM."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise AuditorError(
            f"{label}:{line}: invalid UTF-8 byte 0x{data[e.start]:02x} at byte {col} of the line "
            "(expected a UTF-8 text file)"
        ) from None
    # polars rejects a byte-order mark; it is not part of the content
    return data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data


def _read_jsonl(data: bytes, label: str) -> _Table:
    chunks = data.split(b"\n")
    # polars skips blank lines, so record i comes from the i-th non-blank line
    lines = [n for n, c in enumerate(chunks, 1) if c and not c.isspace()]
    if not lines:
        raise AuditorError(f"{label}: no records (empty file)")
    try:
        frame = pl.read_ndjson(BytesIO(data), infer_schema_length=None)
    except _POLARS_ERRORS as e:
        _locate_jsonl_error(chunks, lines, label, e)
    if frame.width == 0:
        raise AuditorError(f"{label}:{lines[0]}: record has no fields (fields seen: none)")
    if frame.height != len(lines):
        _locate_jsonl_error(chunks, lines, label, None)

    def raw(i: int) -> Any:
        return json.loads(chunks[lines[i] - 1])

    return _Table(frame, lines, by_record=False, raw=raw)


def _read_json(data: bytes, label: str) -> _Table:
    body = data.lstrip()
    if not body:
        raise AuditorError(f"{label}: no records (empty file)")
    if body[:1] == b"{":
        line = data.count(b"\n", 0, len(data) - len(body)) + 1
        raise AuditorError(
            f"{label}:{line}: expected a JSON array of objects, found an object "
            "(a JSON Lines file must be named .jsonl)"
        )
    try:
        frame = pl.read_json(BytesIO(data), infer_schema_length=None)
    except _POLARS_ERRORS as e:
        _locate_json_error(data, label, e)
    parsed: list[Any] = []

    def raw(i: int) -> Any:
        if not parsed:  # parse the whole document once, and only if a record needs it
            parsed.append(json.loads(data))
        return parsed[0][i]

    if frame.height == 0:
        doc = json.loads(data)
        if isinstance(doc, list) and doc:
            raise AuditorError(f"{label}:record 1: record has no fields (fields seen: none)")
    return _Table(frame, list(range(1, frame.height + 1)), by_record=True, raw=raw)


def _read_csv(data: bytes, label: str) -> _Table:
    if not data.strip():
        raise AuditorError(f"{label}: no records (empty file)")
    try:
        # every cell stays a string: CSV has no types, and "007" must not become 7
        frame = pl.read_csv(BytesIO(data), infer_schema=False)
    except _POLARS_ERRORS as e:
        _locate_csv_error(data, label, e)
    # CSV has no null: an empty cell is an empty string
    frame = frame.with_columns(pl.all().fill_null(""))
    if frame.height == 0:
        return _Table(frame, [], by_record=False)
    # A row's first line = lines before it + newlines inside earlier rows' quoted cells.
    # polars skips blank lines before the header but keeps later ones as empty rows.
    header_line = 1 + _leading_blank_lines(data) + sum(c.count("\n") for c in frame.columns)
    inner = frame.select(pl.sum_horizontal(pl.all().str.count_matches("\n", literal=True))).to_series()
    inner_nl = inner.to_numpy().astype(np.int64)
    starts = header_line + 1 + np.arange(frame.height) + np.cumsum(inner_nl) - inner_nl
    blank = frame.select(pl.all_horizontal(pl.all() == "")).to_series().to_numpy()
    frame = frame.filter(pl.Series(~blank))
    return _Table(frame, [int(n) for n in starts[~blank]], by_record=False)


def _leading_blank_lines(data: bytes) -> int:
    n, pos = 0, 0
    while (end := data.find(b"\n", pos)) != -1 and data[pos:end].strip(b"\r") == b"":
        n, pos = n + 1, end + 1
    return n


def _read_parquet(data: bytes, label: str) -> _Table:
    try:
        frame = pl.read_parquet(BytesIO(data))
    except _POLARS_ERRORS as e:
        raise AuditorError(f"{label}: cannot read Parquet ({_first_line(e)})") from None
    return _Table(frame, list(range(1, frame.height + 1)), by_record=True)


def _read_arrow(p: Path, label: str) -> _Table:
    import pyarrow as pa

    with _arrow_reader(p, label) as reader:
        batches = list(reader.batches())
        table = pa.Table.from_batches(batches, schema=reader.schema)
        try:
            frame = pl.from_arrow(table)
        except _POLARS_ERRORS as e:
            raise AuditorError(f"{label}: cannot convert Arrow ({_first_line(e)})") from None
    assert isinstance(frame, pl.DataFrame)
    return _Table(frame, list(range(1, frame.height + 1)), by_record=True)


def _shards_digest(shards: Sequence[Path], digests: Sequence[str]) -> str:
    # the names are part of the identity: the same bytes under other shard names (or in
    # another order) are another input
    h = hashlib.sha256()
    for s, d in zip(shards, digests):
        h.update(f"{s.as_posix()}\0{d}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _load_shards(
    label: str, shards: Sequence[Path], fields: tuple[str, ...], id_field: str | None
) -> Batch:
    """Every shard read as ``load`` reads one file, with one recipe for all of them (from
    the union of their fields) and errors that name the shard and its line or record."""
    tables = []
    digests = []
    for shard in shards:
        table, digest = _read(shard, str(shard))
        if table.frame.height == 0:
            raise AuditorError(f"{shard}: no records (expected at least one)")
        tables.append(table)
        digests.append(digest)
    columns: dict[str, None] = {}
    for t in tables:
        columns.update(dict.fromkeys(t.frame.columns))
    recipe = recipe_for(tuple(columns), fields, label=label)
    texts: list[str] = []
    prompts: list[str] = []
    responses: list[str] = []
    given: list[str] = []
    lines: list[int] = []
    owner: list[int] = []
    for k, (shard, table) in enumerate(zip(shards, tables)):
        tx, pr, rs, ids = _extract(table, recipe, id_field, str(shard))
        texts += tx
        prompts += pr
        responses += rs
        given += ids or []
        lines += table.lines
        owner += [k] * len(tx)
    hashes = tuple(content_hash(x) for x in texts)
    if id_field is None:
        ids_out = tuple(default_ids(hashes))
    else:
        whole = _Table(
            pl.DataFrame(),
            lines,
            by_record=False,
            shards=owner,
            shard_labels=tuple(str(s) for s in shards),
            shard_by_record=tuple(t.by_record for t in tables),
        )
        _check_unique(given, whole, id_field, label)
        ids_out = tuple(given)
    return Batch(
        path=label,
        sha256=_shards_digest(shards, digests),
        ids=ids_out,
        texts=tuple(texts),
        hashes=hashes,
        lines=tuple(lines),
        text_fields=recipe.text_fields,
        prompts=tuple(prompts) if recipe.paired else None,
        responses=tuple(responses) if recipe.paired else None,
        prompt_fields=recipe.prompt_fields,
        response_fields=recipe.response_fields,
    )


def _read_datasets_folder(p: Path, label: str) -> _Table:
    if not any((p / m).exists() for m in _DATASET_MARKERS):
        raise AuditorError(
            f"{label}: folder is not a datasets save_to_disk folder "
            f"(no dataset_info.json or state.json; supported: {SUPPORTED})"
        )
    try:
        import datasets  # heavy; only needed for this format
    except ImportError:
        raise AuditorError(f"{label}: reading a datasets folder needs the 'datasets' package") from None
    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:
        raise AuditorError(f"{label}: cannot load datasets folder ({_first_line(e)})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if len(splits) != 1:
            raise AuditorError(
                f"{label}: folder holds splits {', '.join(splits)} (expected one; pass the split's "
                f"folder, e.g. {p / splits[0]})"
            )
        ds = ds[splits[0]]
    if len(ds) == 0:
        raise AuditorError(f"{label}: no records (expected at least one)")
    try:
        # the arrow format honours any indices mapping (select/shuffle) the dataset carries
        frame = pl.from_arrow(ds.with_format("arrow")[:])
    except _POLARS_ERRORS as e:
        raise AuditorError(f"{label}: cannot convert datasets folder ({_first_line(e)})") from None
    assert isinstance(frame, pl.DataFrame)
    return _Table(frame, list(range(1, frame.height + 1)), by_record=True)


# ---------------------------------------------------------------------------- locating parse errors


def _locate_jsonl_error(
    chunks: list[bytes], lines: list[int], label: str, err: BaseException | None
) -> NoReturn:
    """polars failed (or lost records): find the first bad line with the stdlib parser."""
    records = []
    for n in lines:
        try:
            rec = json.loads(chunks[n - 1])
        except json.JSONDecodeError as e:
            raise AuditorError(f"{label}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise AuditorError(f"{label}:{n}: malformed JSON (nested too deeply)") from None
        if not isinstance(rec, dict):
            raise AuditorError(f"{label}:{n}: expected a JSON object, found {_describe(rec)}")
        records.append(rec)
    _locate_type_conflict(records, [f"{label}:{n}" for n in lines], loose=True)
    reason = _first_line(err) if err is not None else "records were lost while parsing"
    raise AuditorError(f"{label}: cannot read JSON Lines ({reason})")


def _locate_json_error(data: bytes, label: str, err: BaseException) -> NoReturn:
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as e:
        raise AuditorError(f"{label}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise AuditorError(f"{label}: malformed JSON (nested too deeply)") from None
    if not isinstance(doc, list):
        raise AuditorError(f"{label}:1: expected a JSON array of objects, found {_describe(doc)}")
    for k, rec in enumerate(doc, 1):
        if not isinstance(rec, dict):
            raise AuditorError(f"{label}:record {k}: expected a JSON object, found {_describe(rec)}")
    _locate_type_conflict(doc, [f"{label}:record {k}" for k in range(1, len(doc) + 1)])
    raise AuditorError(f"{label}: cannot read JSON ({_first_line(err)})")


def _locate_csv_error(data: bytes, label: str, err: BaseException) -> NoReturn:
    reader = csv.reader(StringIO(data.decode("utf-8"), newline=""))
    try:
        header = next(reader, [])
        for row in reader:
            if len(row) > len(header):
                raise AuditorError(
                    f"{label}:{reader.line_num}: row has {len(row)} cells but the header has "
                    f"{len(header)} (quote cells that contain commas)"
                )
    except csv.Error as e:
        raise AuditorError(f"{label}:{reader.line_num}: malformed CSV ({e})") from None
    raise AuditorError(f"{label}: cannot read CSV ({_first_line(err)})")


class _Conflict(Exception):
    def __init__(self, path: str, here: Any, before: Any) -> None:
        super().__init__(path)
        self.path, self.here, self.before = path, here, before


def _shape(value: Any, path: str, loose: bool = False) -> Any:
    """A value's JSON type skeleton: dict of shapes, [shape of items], or a scalar tag."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _shape(v, f"{path}.{k}" if path else k, loose) for k, v in value.items()}
    if isinstance(value, list):
        merged = None
        for v in value:
            merged = _merge(merged, _shape(v, f"{path}.*", loose), f"{path}.*", loose)
        return [merged]
    if isinstance(value, str):
        return "str"
    return "bool" if isinstance(value, bool) else "num"


def _merge(a: Any, b: Any, path: str, loose: bool = False) -> Any:
    # mirrors what polars can unify: nulls, numbers, scalars into strings, and
    # objects/lists recursively; anything else is the conflict that made it fail
    if a is None or b is None:
        return b if a is None else a
    if loose and (a == "str" or b == "str"):  # read_ndjson writes any JSON value into a string column
        return "str"
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(out.get(k), v, f"{path}.{k}" if path else k, loose)
        return out
    if isinstance(a, list) and isinstance(b, list):
        return [_merge(a[0], b[0], f"{path}.*", loose)]
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return a
        if "str" in (a, b):
            return "str"
    raise _Conflict(path, b, a)


def _locate_type_conflict(records: Iterable[dict[str, Any]], wheres: list[str], loose: bool = False) -> None:
    shape: Any = None
    for k, rec in enumerate(records):
        try:
            shape = _merge(shape, _shape(rec, "", loose), "", loose)
        except _Conflict as c:
            raise _conflict_error(wheres[k], c) from None


def _conflict_error(where: str, c: _Conflict) -> AuditorError:
    return AuditorError(
        f"{where}: field '{c.path}' is {_shape_name(c.here)} here but {_shape_name(c.before)} "
        "in earlier records or items (expected one JSON type per field)"
    )


def _shape_name(shape: Any) -> str:
    if isinstance(shape, dict):
        return "an object"
    if isinstance(shape, list):
        return "a list"
    return {"str": "a string", "num": "a number", "bool": "a boolean"}.get(shape, "null")


# ---------------------------------------------------------------------------- which fields


@dataclass(frozen=True)
class Recipe:
    """How to turn one record into (text, prompt, response): made by ``recipe_for``."""

    text_fields: tuple[str, ...]
    specs: tuple[tuple[str, bool], ...] = ()  # (path, required), in text order
    prompt: tuple[str, ...] = ()
    response: tuple[str, ...] = ()
    chat: bool = False

    @property
    def paired(self) -> bool:
        return self.chat or bool(self.response)

    @property
    def prompt_fields(self) -> tuple[str, ...]:
        """Fields read as the prompt (for chat: the messages before the last assistant turn)."""
        return ("messages",) if self.chat else (self.prompt if self.paired else ())

    @property
    def response_fields(self) -> tuple[str, ...]:
        """Fields read as the response (for chat: the last assistant message)."""
        return ("messages",) if self.chat else self.response


def _as_fields(text_fields: Sequence[str] | str | None) -> tuple[str, ...]:
    if text_fields is None:
        return ()
    fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
    for f in fields:
        if not isinstance(f, str) or not f:
            raise AuditorError(f"text_fields: bad field name {f!r} (expected a field path such as 'text')")
    return fields


def recipe_for(
    columns: Sequence[str], text_fields: Sequence[str] | str | None = None, *, label: str = "input"
) -> Recipe:
    """The recipe for a file whose records have the top-level fields ``columns`` (all of
    them, over the whole file: the recipe must not depend on which records were seen).

    ``text_fields`` given: those paths, each required.  Otherwise the common shapes, as
    ``load`` documents them.  Raises AuditorError naming ``label`` and the fields seen.
    """
    fields = _as_fields(text_fields)
    return _explicit_recipe(fields) if fields else _auto_recipe(columns, label)


class Extracted(NamedTuple):
    """One record as text: what is embedded, its prompt/response parts, and its id."""

    text: str
    prompt: str
    response: str
    id: str


def extract(record: Any, recipe: Recipe, *, where: str, id_field: str | None = None) -> Extracted:
    """Turn one parsed record into text by ``recipe``; errors are prefixed with ``where``
    (``FILE:LINE`` or ``FILE:record N``, see ``location``)."""
    if not isinstance(record, dict):
        raise AuditorError(f"{where}: expected a JSON object, found {_describe(record)}")
    try:
        return Extracted(*_extract_row(record, recipe, id_field, False))
    except _FieldError as e:
        raise AuditorError(_one_line(f"{where}: {e}")) from None


def _one_line(msg: str) -> str:
    # keys and values quoted from the data may hold newlines; messages stay one line
    return msg.replace("\r", "\\r").replace("\n", "\\n")


def _explicit_recipe(fields: tuple[str, ...]) -> Recipe:
    return Recipe(text_fields=fields, specs=tuple((f, True) for f in fields))


def _auto_recipe(columns: Sequence[str], label: str) -> Recipe:
    cols = set(columns)
    if "text" in cols:
        return _explicit_recipe(("text",))
    if "messages" in cols:
        return Recipe(text_fields=("messages",), chat=True)
    if "instruction" in cols:
        prompt = [("instruction", True)] + ([("input", False)] if "input" in cols else [])
        out = next((f for f in _RESPONSE_FIELDS if f in cols), None)
        if out is not None:
            response = [(out, True)]
        elif "instances" in cols:  # Self-Instruct seed / user-oriented task shape
            prompt.append(("instances.*.input", False))
            response = [("instances.*.output", True)]
        else:
            response = []
        return _recipe_from(prompt, response)
    if "prompt" in cols:
        out = next((f for f in ("completion", "response") if f in cols), None)
        if out is not None:
            return _recipe_from([("prompt", True)], [(out, True)])
    seen = ", ".join(columns) or "none"
    raise AuditorError(f"{label}: no text field recognised (fields seen: {seen}; expected {_AUTO_SHAPES})")


def _recipe_from(prompt: list[tuple[str, bool]], response: list[tuple[str, bool]]) -> Recipe:
    specs = tuple(prompt + response)
    return Recipe(
        text_fields=tuple(p for p, _ in specs),
        specs=specs,
        prompt=tuple(p for p, _ in prompt),
        response=tuple(p for p, _ in response),
    )


# ---------------------------------------------------------------------------- per-record extraction


class _FieldError(Exception):
    """What is wrong with one record (the caller prefixes file and line)."""


class _Coerced(Exception):
    """A string that may be polars' rendering of a non-string JSON value."""


def _extract(
    table: _Table, recipe: Recipe, id_field: str | None, label: str
) -> tuple[list[str], list[str], list[str], list[str] | None]:
    """Texts, prompts, responses and (with ``id_field``) ids of every record, in order."""
    frame = table.frame
    paths = (
        [p for p, _ in recipe.specs]
        + (["messages"] if recipe.chat else [])
        + ([id_field] if id_field else [])
    )
    cols = [c for c in frame.columns if any(p == c or p.startswith(c + ".") for p in paths)]
    # Polars unifies each JSON field to one type: a missing key reads as null and a number,
    # boolean, object or list in a string column reads as its JSON text.  Records where
    # that may have happened are judged again from their exact parse.
    check = table.raw is not None
    values: dict[str, list[Any]] = {}

    def one(i: int) -> tuple[str, str, str, str]:
        if not values:
            values.update({c: frame.get_column(c).to_list() for c in cols})
        try:
            return _extract_row({c: values[c][i] for c in cols}, recipe, id_field, check)
        except (_FieldError, _Coerced):
            exact = table.raw(i) if table.raw is not None else frame.row(i, named=True)
            try:
                return _extract_row(exact, recipe, id_field, False)
            except _FieldError as e:
                raise AuditorError(f"{table.where(label, i)}: {e}") from None

    fast = _columnar(frame, recipe, id_field, check)
    if fast is None:
        rows = [one(i) for i in range(frame.height)]
        texts, prompts, responses, ids = (list(x) for x in zip(*rows))
    else:
        texts, prompts, responses, ids, redo = fast
        for i in redo:  # the few records the columnar pass could not vouch for
            texts[i], prompts[i], responses[i], ids[i] = one(i)
    return texts, prompts, responses, (ids if id_field else None)


def _columnar(
    frame: pl.DataFrame, recipe: Recipe, id_field: str | None, check: bool
) -> tuple[list[str], list[str], list[str], list[str], list[int]] | None:
    """The common case (top-level string fields) in polars expressions, for speed.

    Gives the same results as ``_extract_row`` and the rows it must still run on: nulls,
    empty texts or ids, and strings polars may have made from non-strings.  None when the
    recipe needs more than top-level string columns.
    """
    schema = frame.schema
    if recipe.chat:
        return None
    for path, required in recipe.specs:
        dtype = schema.get(path)
        if not (dtype == pl.String or (dtype == pl.Null and not required)):
            return None
    id_dtype = schema.get(id_field) if id_field else None
    if id_field and not (id_dtype == pl.String or (id_dtype is not None and id_dtype.is_integer())):
        return None

    def part(c: str) -> pl.Expr:
        col = pl.col(c).cast(pl.String)
        return pl.when(col.str.strip_chars(_BLANK) != "").then(col)

    def joined(ps: Sequence[str]) -> pl.Expr:
        return pl.concat_str([part(p) for p in ps], separator="\n", ignore_nulls=True) if ps else pl.lit("")

    redo = [pl.col(p).is_null() for p, required in recipe.specs if required]
    if check:
        redo += [pl.col(p).cast(pl.String).str.contains(_COERCED_RE) for p, _ in recipe.specs]
    text = joined([p for p, _ in recipe.specs])
    redo.append(text == "")
    ident = pl.lit("")
    if id_field:
        ident = pl.col(id_field).cast(pl.String)
        redo.append(ident.is_null())
        if id_dtype == pl.String:
            redo.append(ident.str.strip_chars(_BLANK) == "")
            if check:
                redo.append(ident.str.contains(_COERCED_RE))
    out = frame.select(
        text=text,
        prompt=joined(recipe.prompt),
        response=joined(recipe.response),
        ident=ident,
        redo=pl.any_horizontal(redo).fill_null(False),
    )
    rows = np.flatnonzero(out.get_column("redo").to_numpy()).tolist()
    cols = [out.get_column(c).to_list() for c in ("text", "prompt", "response", "ident")]
    return cols[0], cols[1], cols[2], cols[3], rows


def _extract_row(
    rec: dict[str, Any], recipe: Recipe, id_field: str | None, check: bool
) -> tuple[str, str, str, str]:
    if recipe.chat:
        text, prompt, response = _chat(rec, check)
    else:
        parts = {path: _strings(rec, path, required, check) for path, required in recipe.specs}
        text = _join(s for path, _ in recipe.specs for s in parts[path])
        prompt = _join(s for path in recipe.prompt for s in parts[path])
        response = _join(s for path in recipe.response for s in parts[path])
        if not text:
            names = recipe.text_fields
            if len(names) == 1:
                raise _FieldError(f"field '{names[0]}' is empty (expected non-empty text)")
            quoted = ", ".join(f"'{n}'" for n in names)
            raise _FieldError(f"fields {quoted} are all empty (expected non-empty text)")
    ident = _id(rec, id_field, check) if id_field else ""
    return text, prompt, response, ident


def _join(parts: Iterable[str]) -> str:
    return "\n".join(p for p in parts if p.strip(_BLANK))


def _strings(rec: Any, path: str, required: bool, check: bool, done: str = "") -> list[str]:
    out = []
    for lab, v in _resolve(rec, path, not required, done):
        if isinstance(v, str):
            if check and _maybe_coerced(v):
                raise _Coerced
            out.append(v)
        elif v is None and not required:
            continue
        else:
            hint = f"; use '{lab}.*' to join its items" if isinstance(v, list) else ""
            raise _FieldError(f"field '{lab}' is {_describe(v)} (expected a string{hint})")
    return out


def _chat(rec: dict[str, Any], check: bool) -> tuple[str, str, str]:
    [(lab, msgs)] = _resolve(rec, "messages", False)
    if not isinstance(msgs, list):
        raise _FieldError(
            f"field '{lab}' is {_describe(msgs)} (expected a list of {{role, content}} objects)"
        )
    turns = []
    for k, m in enumerate(msgs):
        where = f"{lab}.{k}"
        if not isinstance(m, dict):
            raise _FieldError(
                f"field '{where}' is {_describe(m)} (expected an object with 'role' and 'content')"
            )
        [role] = _strings(m, "role", True, check, where)
        [content] = _strings(m, "content", True, check, where)
        turns.append((role, content))
    if not any(content.strip(_BLANK) for _, content in turns):
        raise _FieldError(f"field '{lab}' has no text (expected messages with non-empty content)")
    assistant = [k for k, (role, _) in enumerate(turns) if role == "assistant"]
    last = assistant[-1] if assistant else -1
    text = "\n".join(f"{role}: {content}" for role, content in turns)
    prompt = "\n".join(f"{role}: {content}" for k, (role, content) in enumerate(turns) if k != last)
    response = turns[last][1] if assistant else ""
    return text, prompt, response


def _id(rec: dict[str, Any], id_field: str, check: bool) -> str:
    found = _resolve(rec, id_field, False)
    if len(found) != 1:
        raise _FieldError(f"field '{id_field}' gives {len(found)} values (expected exactly one id)")
    lab, v = found[0]
    if isinstance(v, str):
        if check and _maybe_coerced(v):
            raise _Coerced
        if not v.strip(_BLANK):
            raise _FieldError(f"field '{lab}' is empty (expected a non-empty string or integer id)")
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise _FieldError(f"field '{lab}' is {_describe(v)} (expected a string or integer id)")


def _resolve(obj: Any, path: str, optional: bool, done: str = "") -> list[tuple[str, Any]]:
    """(label, value) pairs at dotted ``path`` inside ``obj``.

    ``*`` expands every item of a list and a number indexes one.  A key that itself
    contains dots (CSV headers, flattened exports) wins over descending.  ``optional``
    turns a missing key or null on the way into "no values" instead of an error.
    """
    if isinstance(obj, dict):
        if path in obj:
            return [(_sub(done, path), obj[path])]
        head, _, rest = path.partition(".")
        if not rest or head not in obj:
            if optional:
                return []
            seen = ", ".join(str(k) for k in obj) or "none"
            raise _FieldError(f"field '{_sub(done, path)}' missing (fields seen: {seen})")
        return _resolve(obj[head], rest, optional, _sub(done, head))
    head, _, rest = path.partition(".")
    if isinstance(obj, list):
        if head == "*":
            items = list(enumerate(obj))
        elif head.isdigit():
            if int(head) >= len(obj):
                if optional:
                    return []
                raise _FieldError(f"field '{_sub(done, path)}' missing ('{done}' has {len(obj)} items)")
            items = [(int(head), obj[int(head)])]
        else:
            raise _FieldError(
                f"field '{done}' is a list (expected an object with '{head}'; "
                f"use '{done}.*.{path}' to join its items or '{done}.0.{path}' for one)"
            )
        out: list[tuple[str, Any]] = []
        for k, item in items:
            lab = _sub(done, str(k))
            out.extend(_resolve(item, rest, optional, lab) if rest else [(lab, item)])
        return out
    if obj is None and optional:
        return []
    raise _FieldError(f"field '{done}' is {_describe(obj)} (expected an object or list to look up '{path}')")


def _sub(done: str, key: str) -> str:
    return f"{done}.{key}" if done else key


def _maybe_coerced(s: str) -> bool:
    return s[:1] in ("{", "[") or s in ("true", "false") or _NUMBER.fullmatch(s) is not None


def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, (int, float)):
        return f"a number ({v})"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, str):
        return "a string"
    return f"a {type(v).__name__} value"


def _check_unique(ids: list[str], table: _Table, id_field: str, label: str) -> None:
    first: dict[str, int] = {}
    for i, ident in enumerate(ids):
        j = first.setdefault(ident, i)
        if j != i:
            raise AuditorError(
                f"{table.where(label, i)}: field '{id_field}' value {_short(ident)} repeats the id of "
                f"{table.unit(j)} (expected unique ids)"
            )


def _short(s: str, limit: int = 60) -> str:
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


# ---------------------------------------------------------------------------- in-memory inputs
#
# What a notebook holds instead of a file: a pandas or polars DataFrame, a 🤗
# ``datasets.Dataset`` / ``IterableDataset``, a list of dicts or a list of strings.  Each
# becomes the same list of records a file would, then goes through ``recipe_for`` and
# ``extract``: one record -> text recipe, so a DataFrame and the JSONL it was saved as give
# the same texts, hashes and cache hits.  The libraries are recognised by their type's
# module, so none of them is imported here.


@dataclass(frozen=True)
class InMemory:
    """An in-memory input as a Batch plus the vectors of an embeddings column, if asked."""

    batch: Batch
    embeddings: np.ndarray | None


def kind_of(data: Any) -> str | None:
    """A short name for an in-memory input (``pandas.DataFrame``, ``datasets.Dataset``,
    ``list of dicts`` ...), or None for anything else (a path, a Batch)."""
    mod = type(data).__module__.split(".")[0]
    name = type(data).__name__
    if mod in ("pandas", "polars") and name == "DataFrame":
        return f"{mod}.DataFrame"
    if mod == "datasets" and name in ("Dataset", "IterableDataset"):
        return f"datasets.{name}"
    if isinstance(data, (list, tuple)):
        if all(isinstance(x, str) for x in data):
            return "list of strings"
        return "list of dicts"
    return None


def _rows_of(data: Any, kind: str, label: str) -> list[Any]:
    if kind == "pandas.DataFrame":
        # missing cells are NaN in pandas; a record's missing field is None everywhere else
        frame = data.astype(object).where(data.notna(), None)
        return [dict(zip(map(str, frame.columns), row, strict=True)) for row in frame.itertuples(index=False)]
    if kind == "polars.DataFrame":
        return list(data.to_dicts())
    if kind == "datasets.Dataset":
        return list(data.to_list())
    if kind == "datasets.IterableDataset":
        return [dict(r) for r in data]
    if kind == "list of strings":
        return [{"text": s} for s in data]
    return list(data)


def from_records(
    data: Any,
    *,
    text_fields: Sequence[str] | str | None = None,
    id_field: str | None = None,
    embeddings: str | None = None,
    label: str = "input",
) -> InMemory:
    """Turn an in-memory input (see ``kind_of``) into a Batch, exactly as ``load`` reads a file.

    ``text_fields`` / ``id_field``: as for ``load`` (a list of strings is its own text, so
    it takes neither).  ``embeddings``: the name of a column holding one vector per record;
    it is taken out of the records (never embedded as text) and returned as a float32
    array.  ``Batch.lines`` holds the 1-based record number, as for JSON arrays; errors
    say ``LABEL:record N``.  Raises AuditorError for anything a user can get wrong.
    """
    kind = kind_of(data)
    if kind is None:
        raise AuditorError(
            f"{label}: cannot read a {type(data).__name__} (expected a path, a pandas or polars DataFrame, "
            "a datasets.Dataset, a list of dicts or a list of strings)"
        )
    rows = _rows_of(data, kind, label)
    if not rows:
        raise AuditorError(f"{label}: no records (expected at least one)")
    if kind == "list of strings" and (text_fields not in (None, "text", ("text",), ["text"]) or id_field):
        raise AuditorError(f"{label}: a list of strings is its own text (expected no text_fields or id_field)")
    vectors = None
    if embeddings is not None:
        rows, vectors = _split_vectors(rows, embeddings, label)
    columns: dict[str, None] = {}
    for n, rec in enumerate(rows, 1):
        if not isinstance(rec, dict):
            raise AuditorError(f"{label}:record {n}: expected a record (a dict), found {_describe(rec)}")
        columns.update(dict.fromkeys(map(str, rec)))
    recipe = recipe_for(list(columns), text_fields, label=label)
    parts = [extract(rec, recipe, where=f"{label}:record {n}", id_field=id_field) for n, rec in enumerate(rows, 1)]
    hashes = tuple(content_hash(p.text) for p in parts)
    if id_field:
        first: dict[str, int] = {}
        for n, p in enumerate(parts, 1):
            m = first.setdefault(p.id, n)
            if m != n:
                raise AuditorError(
                    f"{label}:record {n}: field '{id_field}' value {_short(p.id)} repeats the id of "
                    f"record {m} (expected unique ids)"
                )
        ids = tuple(p.id for p in parts)
    else:
        ids = tuple(default_ids(hashes))
    digest = hashlib.sha256(
        json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    ).hexdigest()
    batch = Batch(
        path=label,
        sha256=digest,
        ids=ids,
        texts=tuple(p.text for p in parts),
        hashes=hashes,
        lines=tuple(range(1, len(parts) + 1)),
        text_fields=recipe.text_fields,
        prompts=tuple(p.prompt for p in parts) if recipe.paired else None,
        responses=tuple(p.response for p in parts) if recipe.paired else None,
        prompt_fields=recipe.prompt_fields,
        response_fields=recipe.response_fields,
    )
    return InMemory(batch=batch, embeddings=vectors)


def _split_vectors(rows: list[Any], column: str, label: str) -> tuple[list[Any], np.ndarray]:
    """The records without ``column`` and the column's vectors as one (n, d) float32 array."""
    out_rows, vectors = [], []
    for n, rec in enumerate(rows, 1):
        if not isinstance(rec, dict) or column not in rec:
            seen = ", ".join(map(str, rec)) if isinstance(rec, dict) else _describe(rec)
            raise AuditorError(
                f"{label}:record {n}: field '{column}' missing (fields seen: {seen}; expected an embeddings column)"
            )
        rec = dict(rec)
        vectors.append(rec.pop(column))
        out_rows.append(rec)
    return out_rows, as_vectors(vectors, len(out_rows), label=f"{label}: field '{column}'")


def as_vectors(values: Any, n: int, *, label: str) -> np.ndarray:
    """``values`` (an array or a sequence of equal-length numeric sequences) as an (n, d)
    float32 array of finite numbers; AuditorError naming ``label`` otherwise."""
    try:
        arr = np.asarray(
            values if isinstance(values, np.ndarray) else [np.asarray(v, dtype=np.float64) for v in values],
            dtype=np.float64,
        )
    except (TypeError, ValueError) as e:
        raise AuditorError(
            f"{label}: not a table of numbers ({_first_line(e)}; expected one equal-length vector per record)"
        ) from None
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
        raise AuditorError(f"{label}: shape {arr.shape} (expected ({n}, d): one vector per record)")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise AuditorError(f"{label}: record {int(bad[0]) + 1} has a NaN or infinite value (expected finite numbers)")
    return arr.astype(np.float32)

"""Which files make up an input: one file, a folder of shards, or a glob.

Standard library only, so the CLI can check a path before any heavy import.  A corpus at
scale comes as many files: ``data/train-00000-of-00128.parquet`` ..., a Spark output
folder of ``part-*.jsonl`` files, or a pattern the user types (``'shards/*.jsonl.gz'``).
``auditor.io`` reads every shard with the same record -> text recipe and names the shard
in every error.
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path

from auditor.errors import AuditorError

# the formats a shard may have (each line format also gzipped); a datasets save_to_disk
# folder is one input, not a shard folder
SHARD_FORMATS = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".arrow")
DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
# what sits beside shards in published corpora and is not data (dataset cards, Hadoop
# markers and checksums): skipped.  Any other unknown file is refused, not skipped, so a
# shard in a format we do not read can never silently drop out of the audit.
_NOT_DATA_SUFFIXES = (".md", ".txt", ".crc", ".yaml", ".yml", ".lock")
_PATTERN_CHARS = frozenset("*?[")


def known_format(name: str) -> bool:
    """Whether a file name has a format ``auditor.io`` reads (``.parquet``/``.arrow``
    never gzipped)."""
    name = name.lower()
    if name.endswith((".parquet", ".arrow")):
        return True
    base = name[:-3] if name.endswith(".gz") else name
    return base.endswith((".jsonl", ".ndjson", ".json", ".csv"))


def is_pattern(path: str | Path) -> bool:
    """A glob (``*``, ``?``, ``[``) that is not itself an existing path."""
    s = str(path)
    return bool(_PATTERN_CHARS & set(s)) and not os.path.lexists(s)


def is_dataset_folder(path: Path) -> bool:
    return any((path / m).is_file() for m in DATASET_MARKERS)


def shards_of(path: str | Path) -> tuple[Path, ...] | None:
    """The shard files of a folder of shards or a glob, sorted by path; None for a plain
    file or a datasets folder (read as one input).

    Hidden files and folders (``.git``, ``.cache``) and names starting with ``_``
    (``_SUCCESS``, ``_metadata``) are skipped, as are dataset cards and checksums; any
    other file of an unknown type is an error naming it.  No shard found is an error.
    """
    label = str(path)
    if is_pattern(path):
        found = sorted(Path(p) for p in glob.glob(label, recursive=True))
        files = [p for p in found if p.is_file() and not _skipped(p.name)]
        for p in files:
            if not known_format(p.name):
                _unknown(p)
        if not files:
            raise AuditorError(f"{label}: pattern matches no data files (expected shards such as *.parquet)")
        return tuple(files)
    p = Path(path)
    if not p.is_dir() or is_dataset_folder(p):
        return None
    files = []
    for root, dirs, names in os.walk(p):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for name in sorted(names):
            f = Path(root) / name
            if _skipped(name) or name.lower().endswith(_NOT_DATA_SUFFIXES):
                continue
            if not known_format(name):
                _unknown(f)
            try:
                mode = f.stat().st_mode
            except OSError as e:
                raise AuditorError(f"{f}: cannot read ({e.strerror or e})") from None
            if not stat.S_ISREG(mode):  # never open a FIFO or device: it could hang the gate
                raise AuditorError(f"{f}: not a regular file (expected a data shard)")
            files.append(f)
    if not files:
        raise AuditorError(
            f"{label}: folder is not a datasets save_to_disk folder and holds no data shards "
            f"(no dataset_info.json or state.json; shards: {', '.join(SHARD_FORMATS)}, "
            "each line format also gzipped)"
        )
    return tuple(sorted(files))


def _skipped(name: str) -> bool:
    return name.startswith((".", "_"))


def _unknown(p: Path) -> None:
    found = "".join(p.suffixes[-2:]) or "no extension"
    raise AuditorError(
        f"{p}: unknown file type '{found}' in a shard folder (expected {', '.join(SHARD_FORMATS)}, "
        "each line format also gzipped)"
    )

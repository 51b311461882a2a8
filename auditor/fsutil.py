"""File hashing and durable, atomic writes: the one home of both.

Everything auditor writes that a user keeps (reports, cache shards, store snapshots) goes
through here, so "a reader sees the old file or the whole new one" holds in one place.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_BLOCK = 1 << 22


def _update(h: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 hex of one file's bytes."""
    h = hashlib.sha256()
    _update(h, Path(path))
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike[str]) -> str:
    """sha256 hex of a file, or of a folder's sorted relative paths, sizes and contents.

    Length prefixes keep (path, content) boundaries unambiguous, so two different trees
    never hash alike by moving bytes between a name and a file."""
    p = Path(path)
    if not p.is_dir():
        return sha256_file(p)
    h = hashlib.sha256()
    files = sorted((f for f in p.rglob("*") if f.is_file()), key=lambda f: f.relative_to(p).as_posix())
    for f in files:
        rel = f.relative_to(p).as_posix().encode("utf-8")
        h.update(len(rel).to_bytes(8, "big") + rel + f.stat().st_size.to_bytes(8, "big"))
        _update(h, f)
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The exact bytes written for hashed JSON documents (sorted keys, indent 2, no NaN)."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory (a directory's fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_durable(path: str | os.PathLike[str], data: bytes) -> None:
    """Write and fsync ``data`` at ``path`` (no rename: for files inside a directory that
    is itself renamed into place)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_npy_durable(path: str | os.PathLike[str], arr: Any) -> None:
    """``np.save`` without pickles, fsynced (no rename)."""
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same directory (same filesystem, so the rename
    is atomic), are flushed and fsynced, then ``os.replace``d over the target.  ``mode``
    defaults to the old file's mode, else 0644 (mkstemp's 0600 would hide CI artefacts)."""
    return _write_atomic(path, lambda fh: fh.write(data), mode)


def _write_atomic(path: str | os.PathLike[str], write: Callable[[Any], object], mode: int | None) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is None:
            mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:  # never leave a stray temp file beside the target
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """UTF-8 text, ``\\n`` newlines, written with :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_npy_atomic(path: str | os.PathLike[str], arr: Any, *, mode: int | None = None) -> Path:
    """``np.save`` (no pickles) with :func:`write_bytes_atomic`'s guarantee, streamed to the
    temporary file rather than built in memory first (cache shards can be large)."""
    import numpy as np

    return _write_atomic(path, lambda fh: np.save(fh, np.ascontiguousarray(arr), allow_pickle=False), mode)

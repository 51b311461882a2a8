"""The embedding cache: vectors on disk keyed by (model fingerprint, content hash), each
entry authenticated, so nothing the audited data brings along can choose its embeddings.

The cache may sit where the curator can write (a CI checkout, a shared runner), so every
entry carries an HMAC-SHA256 over (model fingerprint, content hash, vector bytes) under a
key kept outside the checkout: ``$AUDITOR_CACHE_KEY`` (a CI secret), else the key file
``$XDG_CONFIG_HOME/auditor/cache.key`` (created with 32 random bytes, mode 0600, on first
use).  On read, every entry is checked for shape, dtype, finiteness and its HMAC; one
that fails is ignored, counted (``EmbeddingCache.stats``) and embedded again.  Files are
``lstat``-ed before they are opened and parsed by their header alone (no pickles, no
``np.load`` on untrusted bytes), so a FIFO, a link, a device, a 0-byte, truncated or
garbage shard is skipped, never followed, hung on or crashed on.

Layout: ``ROOT/<fingerprint[:16]>/shard-<uuid>.npy``, each a structured array with fields
``hash`` (32 raw sha256 bytes), ``mac`` (32 bytes) and ``emb`` (float32[dim]), written
atomically, so a killed run loses at most the chunk in flight.  The default ROOT is
``$XDG_CACHE_HOME/auditor`` (``~/.cache/auditor``), outside any repository.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.fsutil import save_npy_atomic
from auditor.types import AuditorError

CACHE_KEY_ENV = "AUDITOR_CACHE_KEY"
_MAC_DOMAIN = b"auditor-cache-v1\0"
_MIN_KEY = 16


def _xdg(var: str, fallback: str) -> Path:
    # the XDG spec says relative values are invalid and must be ignored
    value = os.environ.get(var, "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/auditor`` (default ``~/.cache/auditor``): outside the repository."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "auditor"


def cache_key_path() -> Path:
    """``$XDG_CONFIG_HOME/auditor/cache.key`` (default ``~/.config/auditor/cache.key``)."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "auditor" / "cache.key"


DEFAULT_CACHE_DIR = default_cache_dir()


def load_cache_key() -> bytes:
    """The HMAC key: ``$AUDITOR_CACHE_KEY`` if set, else the key file, created on first use."""
    env = os.environ.get(CACHE_KEY_ENV)
    if env is not None:
        if len(env) < _MIN_KEY:
            raise AuditorError(
                f"{CACHE_KEY_ENV}: {len(env)} characters (expected at least {_MIN_KEY}, e.g. 64 hex digits)"
            )
        return env.encode()
    path = cache_key_path()
    if not os.path.lexists(path):
        _create_key(path)
    return _read_key(path)


def _create_key(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".cache.key.", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # never replaces a key another process made meanwhile
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    except OSError as e:
        raise AuditorError(
            f"{path}: cannot create the cache key ({e.strerror or e}; set {CACHE_KEY_ENV} instead)"
        ) from None


def _read_key(path: Path) -> bytes:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise AuditorError(f"{path}: the cache key is not a regular file (expected 32 random bytes)")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            key = fh.read(4096)
    except OSError as e:
        raise AuditorError(f"{path}: cannot read the cache key ({e.strerror or e})") from None
    if len(key) < _MIN_KEY:
        raise AuditorError(
            f"{path}: cache key of {len(key)} bytes (expected at least {_MIN_KEY}; delete it to make a new one)"
        )
    return key


@dataclass(frozen=True)
class CacheStats:
    """What the cache did, in records.  ``used``: embeddings taken from the cache;
    ``rejected``: entries found but refused (bad HMAC, shape, dtype or non-finite);
    ``spot_checked``: cache hits embedded again to compare; ``re_embedded``: records whose
    cached entry was not used and that were embedded again (rejected entries, and every
    hit when a spot check disagreed); ``skipped_files``: files in the cache folder that
    are not readable shards (links, FIFOs, truncated or foreign files);
    ``spot_check_failures``: runs whose spot check disagreed (the cache was not trusted);
    ``write_failures``: shards that could not be written (the run goes on uncached)."""

    used: int = 0
    rejected: int = 0
    spot_checked: int = 0
    re_embedded: int = 0
    skipped_files: int = 0
    spot_check_failures: int = 0
    write_failures: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "used": self.used,
            "rejected": self.rejected,
            "spot_checked": self.spot_checked,
            "re_embedded": self.re_embedded,
            "skipped_files": self.skipped_files,
            "spot_check_failures": self.spot_check_failures,
            "write_failures": self.write_failures,
        }


def _shard_dtype(dim: int) -> np.dtype[Any]:
    return np.dtype([("hash", "S32"), ("mac", "S32"), ("emb", "<f4", (dim,))])


def _shard_dim(dtype: np.dtype[Any]) -> int | None:
    """The dim of a shard's dtype if it is exactly ours, else None."""
    if dtype.names != ("hash", "mac", "emb"):
        return None
    emb = dtype.fields["emb"][0] if dtype.fields else None
    if emb is None or emb.shape is None or len(emb.shape) != 1 or emb.shape[0] < 1:
        return None
    dim = int(emb.shape[0])
    return dim if dtype == _shard_dtype(dim) else None


def _open_shard(path: Path) -> np.ndarray | None:
    """A shard as a read-only memory map, or None for anything that is not a whole shard.

    ``lstat`` first, so a FIFO or device is never opened (opening a FIFO blocks) and a
    link is never followed; then the ``.npy`` header alone decides the layout, and the
    file size must match it exactly (a truncated or padded file is refused)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            fst = os.fstat(fh.fileno())
            if not stat.S_ISREG(fst.st_mode):
                return None
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                return None
            if fortran or len(shape) != 1 or shape[0] < 1 or _shard_dim(dtype) is None:
                return None
            offset = fh.tell()
            if fst.st_size != offset + shape[0] * dtype.itemsize:
                return None
            return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape)
    except (OSError, ValueError, EOFError, SyntaxError, TypeError, OverflowError, MemoryError):
        return None


def entry_macs(key: bytes, fingerprint: str, hashes: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """HMAC-SHA256 of each (fingerprint, raw content hash, float32 vector bytes)."""
    prefix = _MAC_DOMAIN + fingerprint.encode("ascii", "replace") + b"\0"
    emb = np.ascontiguousarray(embeddings, dtype="<f4")
    return (
        np.array(
            [hmac.digest(key, prefix + bytes(h) + emb[i].tobytes(), "sha256") for i, h in enumerate(hashes)],
            dtype="S32",
        )
        if len(hashes)
        else np.empty(0, dtype="S32")
    )


class _Index:
    """Content hash -> (shard, row), as a sorted array plus a small dict of recent puts.

    40 bytes a record (not ~200 for a dict of bytes), and lookups are vectorised, so a
    cache of millions of records stays cheap to open and query.
    """

    MERGE_AT = 1 << 16

    def __init__(self) -> None:
        self.shards: list[Path] = []
        self.keys = np.empty(0, dtype="S32")
        self.locs = np.empty(0, dtype=np.int64)
        self.pending: dict[bytes, int] = {}
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, shard: Path, keys: np.ndarray, *, merge: bool = True) -> None:
        sid = len(self.shards)
        self.shards.append(shard)
        locs = (np.int64(sid) << np.int64(32)) | np.arange(len(keys), dtype=np.int64)
        if not merge or len(self.pending) + len(keys) > self.MERGE_AT:
            self._parts.append((np.asarray(keys, dtype="S32"), locs))
            if merge:
                self.merge()
        else:
            self.pending.update(zip(np.asarray(keys, dtype="S32").tolist(), locs.tolist()))

    def merge(self) -> None:
        if self.pending:
            self._parts.append(
                (
                    np.array(list(self.pending), dtype="S32"),
                    np.fromiter(self.pending.values(), dtype=np.int64),
                )
            )
            self.pending = {}
        if not self._parts:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._parts])
        locs = np.concatenate([self.locs] + [v for _, v in self._parts])
        order = np.argsort(keys, kind="stable")
        self.keys, self.locs = keys[order], locs[order]
        self._parts = []

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Location of each key, -1 where absent."""
        out = np.full(len(keys), -1, dtype=np.int64)
        if len(self.keys) and len(keys):
            pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            hit = self.keys[pos] == keys
            out[hit] = self.locs[pos[hit]]
        if self.pending:
            for i in np.flatnonzero(out < 0):
                out[i] = self.pending.get(keys[i], -1)
        return out


def _keys(hashes: Sequence[str]) -> np.ndarray:
    """Hex sha256 strings -> raw 32-byte keys, in one pass (no per-hash Python objects)."""
    return np.frombuffer(bytes.fromhex("".join(hashes)), dtype="S32").copy()


class EmbeddingCache:
    """Authenticated embeddings on disk keyed by (model fingerprint, content hash).

    ``get`` returns only entries whose HMAC, shape and values check out; everything else
    reads as a miss and is counted in ``stats``.  ``key`` defaults to ``load_cache_key()``
    (read on first use); ``root`` to ``default_cache_dir()``.
    """

    def __init__(self, root: str | Path | None = None, *, key: bytes | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._key = key
        self._index: dict[str, _Index] = {}
        self._lock = threading.RLock()  # shards may be written from a background thread
        self._counts = dict.fromkeys(CacheStats().to_dict(), 0)

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = load_cache_key()
        return self._key

    @property
    def stats(self) -> CacheStats:
        """What this cache object has done so far (see ``CacheStats``)."""
        with self._lock:
            return CacheStats(**self._counts)

    def count(self, **deltas: int) -> None:
        """Add to the counters (the pipeline reports used, spot-checked and re-embedded)."""
        with self._lock:
            for name, n in deltas.items():
                if name not in self._counts:
                    raise KeyError(name)
                self._counts[name] += int(n)

    def _dir(self, fingerprint: str) -> Path:
        return self.root / fingerprint[:16]

    def _load_index(self, fingerprint: str) -> _Index:
        with self._lock:
            if fingerprint in self._index:
                return self._index[fingerprint]
            index = _Index()
            d = self._dir(fingerprint)
            try:
                names = sorted(e.name for e in os.scandir(d)) if d.is_dir() else []
            except OSError:
                names = []
            for name in names:
                if not (name.startswith("shard-") and name.endswith(".npy")):
                    continue
                arr = _open_shard(d / name)
                if arr is None:
                    self._counts["skipped_files"] += 1
                    continue
                index.add(d / name, np.asarray(arr["hash"]), merge=False)
            index.merge()
            self._index[fingerprint] = index
            return index

    def contains(self, fingerprint: str, hashes: Sequence[str]) -> np.ndarray:
        """Boolean mask: which hashes have an entry under this fingerprint (unverified:
        ``get`` is what checks an entry before use)."""
        keys = _keys(hashes)
        with self._lock:
            return self._load_index(fingerprint).lookup(keys) >= 0

    def get(self, fingerprint: str, hashes: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (embeddings, found_mask); rows not found or refused are zeros."""
        out = np.zeros((len(hashes), dim), dtype=np.float32)
        found = np.zeros(len(hashes), dtype=bool)
        if not len(hashes):
            return out, found
        index = self._load_index(fingerprint)
        keys = _keys(hashes)
        with self._lock:
            locs = index.lookup(keys)
            shards = list(index.shards)
        hit = np.flatnonzero(locs >= 0)
        sids, rows = locs[hit] >> 32, locs[hit] & 0xFFFFFFFF
        rejected = 0
        for sid in np.unique(sids):
            sel = sids == sid
            targets, src = hit[sel], rows[sel]
            arr = _open_shard(shards[int(sid)])  # re-checked: the file may have changed since
            if arr is None or arr.dtype != _shard_dtype(dim) or int(src.max()) >= len(arr):
                rejected += len(targets)
                continue
            order = np.argsort(src)  # read the shard front to back
            targets, src = targets[order], src[order]
            part = arr[src]
            emb = np.asarray(part["emb"], dtype=np.float32)
            macs = entry_macs(self.key, fingerprint, part["hash"], emb)
            ok = (
                (part["hash"] == keys[targets])
                & np.isfinite(emb).all(axis=1)
                & np.array([hmac.compare_digest(a, b) for a, b in zip(macs.tolist(), part["mac"].tolist())])
            )
            out[targets[ok]] = emb[ok]
            found[targets[ok]] = True
            rejected += int((~ok).sum())
        if rejected:
            self.count(rejected=rejected)
        return out, found

    def put(self, fingerprint: str, hashes: Sequence[str], embeddings: np.ndarray) -> None:
        """Store finite embeddings under their content hashes (a write that fails leaves
        the run going: the cache only saves time)."""
        if len(hashes) == 0:
            return
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(hashes) or emb.shape[1] < 1:
            raise ValueError(f"embeddings of shape {emb.shape} for {len(hashes)} hashes")
        if not np.isfinite(emb).all():
            raise ValueError("refusing to cache non-finite embeddings")
        arr = np.zeros(len(hashes), dtype=_shard_dtype(emb.shape[1]))
        arr["hash"] = _keys(hashes)
        arr["emb"] = emb
        arr["mac"] = entry_macs(self.key, fingerprint, arr["hash"], emb)
        final = self._dir(fingerprint) / f"shard-{uuid.uuid4().hex}.npy"
        try:
            save_npy_atomic(final, arr)
        except OSError:
            self.count(write_failures=1)
            return
        with self._lock:
            self._load_index(fingerprint).add(final, arr["hash"])


class ShardWriter:
    """Writes cache shards from a background thread, so encoding goes on meanwhile.

    At most ``depth`` shards wait in memory; leaving the ``with`` block (normally or by
    an exception) waits for every pending write, so finished chunks are never lost.
    """

    def __init__(self, cache: EmbeddingCache | None, depth: int = 2) -> None:
        self.cache = cache
        self.depth = depth
        self._pool: Any = None
        self._pending: list[Any] = []

    def __enter__(self) -> ShardWriter:
        if self.cache is not None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auditor-cache")
        return self

    def put(self, fingerprint: str, hashes: Sequence[str], embeddings: np.ndarray) -> None:
        if self._pool is None or self.cache is None:
            return
        self._pending.append(self._pool.submit(self.cache.put, fingerprint, list(hashes), embeddings))
        while len(self._pending) > self.depth:
            self._pending.pop(0).result()

    def flush(self) -> None:
        while self._pending:
            self._pending.pop(0).result()

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            try:
                self.flush()
            finally:
                self._pool.shutdown(wait=True)

"""Curation rounds on disk: hash-chained snapshots with atomic, locked writes.

A store is a directory (format documented in docs/store.md)::

    DIR/store.json                      the index: version, cluster basis, snapshots in creation order
    DIR/.lock                           flock(2) target; held by a writer for the whole write
    DIR/basis/centroids.npy             the fixed cluster basis (k-means of the first snapshot)
    DIR/snapshots/NAME/manifest.json    what the round is, and sha256 of every file below
    DIR/snapshots/NAME/embeddings.npy   float32 (n, dim)
    DIR/snapshots/NAME/records.parquet  id, hash, text, line, cluster, prompt, response
    DIR/snapshots/NAME/view-<v>.npy     optional extra embedding views (prompt, response)
    DIR/tmp/                            work area; anything here is an unfinished write

Every manifest holds the sha256 of its parent's manifest and of the manifest created just
before it, and the index holds the sha256 of every manifest, so editing, removing or
re-ordering anything shows up in ``Store.verify()``.  A write builds the snapshot under
``tmp/``, renames the finished directory into ``snapshots/`` and then replaces
``store.json``: the index is the commit point, so a write killed at any moment leaves the
previous store intact and its partial snapshot unlisted (the next writer sweeps it away).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from auditor.fsutil import canonical_json, fsync_path, save_npy_durable, sha256_file, write_bytes_durable
from auditor.types import AuditorError, Batch, ModelInfo, Snapshot

STORE_FORMAT = "auditor-store"
STORE_VERSION = 1
INDEX_FILE = "store.json"
LOCK_FILE = ".lock"
BASIS_FILE = "basis/centroids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
RECORDS_FILE = "records.parquet"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (EMBEDDINGS_FILE, RECORDS_FILE)

# Names become directory names: keep them portable and free of path tricks.  Always
# matched with fullmatch: "$" alone also matches before a trailing newline ("r1\n").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VIEW = re.compile(r"[a-z][a-z0-9_]{0,31}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEST_PAUSE_ENV = "AUDITOR_TEST_SLOW_WRITE"


def validate_name(name: str, option: str = "--name") -> str:
    """``name`` if it can name a snapshot (a directory name: letters, digits, '.', '_',
    '-', starting with a letter or digit, at most 128 characters); AuditorError otherwise.
    Callers check it before any work, so a refused name costs nothing and creates nothing."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AuditorError(
            f"{option}: {name!r} is not a valid snapshot name (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit; at most 128 characters)"
        )
    return name


def validate_sha256(value: str, option: str = "--head") -> str:
    """A sha256 as 64 hex digits (lower-cased); AuditorError otherwise."""
    v = value.strip().lower() if isinstance(value, str) else ""
    if not _SHA256.fullmatch(v):
        raise AuditorError(f"{option}: {value!r} is not a sha256 (expected 64 hex digits)")
    return v


def default_basis_k(n: int) -> int:
    """Clusters in the basis: about 40 records per cluster in the first round, 2..64.

    Forty keeps the per-cluster Fisher tables of a diff informative; 64 bounds the
    number of tests (and so the BH correction) for large rounds.
    """
    return int(max(2, min(64, n // 40)))


# --------------------------------------------------------------------------------------
# value types


@dataclass(frozen=True)
class Manifest:
    """One round's manifest (``snapshots/NAME/manifest.json``).

    ``sha256`` is the hash of the manifest file's bytes; it is not part of the JSON.
    """

    name: str
    created: str
    input: Mapping[str, Any]
    model: ModelInfo
    parent: str | None
    parent_manifest_sha256: str | None
    seq: int
    previous_manifest_sha256: str | None
    basis_sha256: str
    files: Mapping[str, str]
    cluster_counts: tuple[int, ...]
    views: tuple[str, ...] = ()
    schema_version: int = STORE_VERSION
    sha256: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", MappingProxyType(dict(self.input)))
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        object.__setattr__(self, "cluster_counts", tuple(int(c) for c in self.cluster_counts))
        object.__setattr__(self, "views", tuple(self.views))

    @property
    def n_records(self) -> int:
        return int(self.input["n_records"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "created": self.created,
            "input": dict(self.input),
            "model": self.model.to_dict(),
            "parent": self.parent,
            "parent_manifest_sha256": self.parent_manifest_sha256,
            "seq": self.seq,
            "previous_manifest_sha256": self.previous_manifest_sha256,
            "basis_sha256": self.basis_sha256,
            "files": dict(self.files),
            "cluster_counts": list(self.cluster_counts),
            "views": list(self.views),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], sha256: str = "") -> Manifest:
        return cls(
            schema_version=int(d["schema_version"]),
            name=str(d["name"]),
            created=str(d["created"]),
            input=dict(d["input"]),
            model=ModelInfo.from_dict(d["model"]),
            parent=None if d["parent"] is None else str(d["parent"]),
            parent_manifest_sha256=d["parent_manifest_sha256"],
            seq=int(d["seq"]),
            previous_manifest_sha256=d["previous_manifest_sha256"],
            basis_sha256=str(d["basis_sha256"]),
            files={str(k): str(v) for k, v in d["files"].items()},
            cluster_counts=tuple(int(c) for c in d["cluster_counts"]),
            views=tuple(str(v) for v in d.get("views", ())),
            sha256=sha256,
        )


@dataclass(frozen=True)
class Problem:
    """One thing ``verify`` found wrong: which snapshot (None: the store itself), which
    file (relative to the store root), and what."""

    snapshot: str | None
    file: str | None
    message: str

    def __str__(self) -> str:
        where = self.file or (f"snapshots/{self.snapshot}" if self.snapshot else INDEX_FILE)
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "file": self.file, "message": self.message}


# --------------------------------------------------------------------------------------
# low-level file helpers


def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _test_pause(stage: str) -> None:
    """Test hook for the crash tests: with ``AUDITOR_TEST_SLOW_WRITE=SECONDS[@STAGE]`` a
    writer announces each write stage on stderr and sleeps there (at every stage, or only
    at STAGE), so a test can SIGKILL it at a known point.  Unset: does nothing."""
    spec = os.environ.get(_TEST_PAUSE_ENV)
    if not spec:
        return
    seconds, _, only = spec.partition("@")
    print(f"auditor-store-stage {stage}", file=sys.stderr, flush=True)
    if not only or only == stage:
        time.sleep(float(seconds))


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_records(path: Path, batch: Batch, clusters: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, Any] = {
        "id": pa.array(batch.ids, type=pa.string()),
        "hash": pa.array(batch.hashes, type=pa.string()),
        "text": pa.array(batch.texts, type=pa.string()),
        "line": pa.array(batch.lines, type=pa.int64()),
        "cluster": pa.array(np.asarray(clusters, dtype=np.int32), type=pa.int32()),
        "prompt": pa.array(batch.prompts if batch.prompts is not None else [None] * len(batch), pa.string()),
        "response": pa.array(
            batch.responses if batch.responses is not None else [None] * len(batch), pa.string()
        ),
    }
    pq.write_table(pa.table(cols), path, compression="zstd")
    fsync_path(path)


def _read_records(path: Path) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = {"id", "hash", "text", "line", "cluster"} - set(table.column_names)
    if missing:
        raise AuditorError(f"{path}: columns {sorted(missing)} missing (columns seen: {table.column_names})")
    return {name: table.column(name).to_pylist() for name in table.column_names}


# --------------------------------------------------------------------------------------
# the store


class Store:
    """A directory of hash-chained curation rounds.

    Reading (``names``, ``manifest``, ``load``, ``verify``) takes no lock: committed
    snapshots never change and the index is replaced atomically.  Writing
    (``add_snapshot``) holds an exclusive ``flock`` on ``DIR/.lock`` for the whole write;
    the kernel releases it if the writer dies, so a crash never leaves a stale lock.
    """

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.lock_timeout = float(lock_timeout)

    # ---- opening ------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> Store:
        """Open the store at ``root``, creating an empty one if the directory has none."""
        store = cls(root, lock_timeout=lock_timeout)
        index_path = store.root / INDEX_FILE
        if store.root.exists() and not store.root.is_dir():
            raise AuditorError(f"{store.root}: --store must be a directory (it is a file)")
        if index_path.exists():
            store._read_index()
            return store
        store.root.mkdir(parents=True, exist_ok=True)
        with store._locked():
            if not index_path.exists():
                for sub in ("snapshots", "basis", "tmp"):
                    (store.root / sub).mkdir(exist_ok=True)
                store._write_index(
                    {"format": STORE_FORMAT, "version": STORE_VERSION, "basis": None, "snapshots": []}
                )
        return store

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> Store:
        """Open an existing store; AuditorError if ``root`` is not one."""
        store = cls(root, lock_timeout=lock_timeout)
        if not (store.root / INDEX_FILE).is_file():
            raise AuditorError(
                f"{store.root}: not an auditor store ({INDEX_FILE} missing; "
                "create one with `auditor snapshot DATA --store DIR --name NAME`)"
            )
        store._read_index()
        return store

    # ---- index --------------------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        path = self.root / INDEX_FILE
        try:
            index = json.loads(path.read_bytes())
        except FileNotFoundError as err:
            raise AuditorError(f"{path}: missing (not an auditor store)") from err
        except (ValueError, UnicodeDecodeError) as err:
            raise AuditorError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(index, dict) or index.get("format") != STORE_FORMAT:
            raise AuditorError(f"{path}: field 'format' is not {STORE_FORMAT!r}")
        if index.get("version") != STORE_VERSION:
            raise AuditorError(
                f"{path}: field 'version' is {index.get('version')!r} (this auditor reads version {STORE_VERSION})"
            )
        if not isinstance(index.get("snapshots"), list):
            raise AuditorError(f"{path}: field 'snapshots' must be a list")
        return index

    def _write_index(self, index: Mapping[str, Any]) -> None:
        tmp = self.root / "tmp" / f"{INDEX_FILE}.{uuid.uuid4().hex}"
        tmp.parent.mkdir(exist_ok=True)
        write_bytes_durable(tmp, canonical_json(index))
        _test_pause("index-written")
        os.replace(tmp, self.root / INDEX_FILE)
        fsync_path(self.root)

    def names(self) -> list[str]:
        """Committed snapshot names in creation order."""
        return [str(e["name"]) for e in self._read_index()["snapshots"]]

    def head(self) -> str | None:
        """sha256 of the newest manifest: pin it (in a PR, a CI log) to make truncation of
        the newest rounds detectable, which no chain stored alongside the data can do."""
        snaps = self._read_index()["snapshots"]
        return str(snaps[-1]["manifest_sha256"]) if snaps else None

    def _entry(self, name: str) -> dict[str, Any]:
        for e in self._read_index()["snapshots"]:
            if e["name"] == name:
                return dict(e)
        known = ", ".join(self.names()) or "none yet"
        raise AuditorError(f"{self.root}: no snapshot named {name!r} (snapshots: {known})")

    def _dir(self, name: str) -> Path:
        return self.root / "snapshots" / name

    # ---- reading ------------------------------------------------------------------

    def manifest(self, name: str) -> Manifest:
        """The manifest of a committed snapshot, checked against the index's sha256."""
        entry = self._entry(name)
        path = self._dir(name) / MANIFEST_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError as err:
            raise AuditorError(f"{path}: missing (run `auditor history --verify`)") from err
        digest = hashlib.sha256(raw).hexdigest()
        if digest != entry["manifest_sha256"]:
            raise AuditorError(
                f"{path}: sha256 {digest[:12]} does not match the index ({str(entry['manifest_sha256'])[:12]}); "
                "the store was altered (run `auditor history --verify`)"
            )
        try:
            return Manifest.from_dict(json.loads(raw), sha256=digest)
        except (ValueError, KeyError, TypeError) as err:
            raise AuditorError(f"{path}: unreadable manifest ({err})") from err

    def manifests(self) -> list[Manifest]:
        """All manifests in creation order."""
        return [self.manifest(n) for n in self.names()]

    def chain(self, name: str | None = None) -> list[Manifest]:
        """The lineage of ``name`` (default: the newest snapshot), root first, following
        parent pointers."""
        names = self.names()
        if not names:
            return []
        cur: str | None = name or names[-1]
        out: list[Manifest] = []
        seen: set[str] = set()
        while cur is not None:
            if cur in seen:
                raise AuditorError(f"{self.root}: parent pointers form a cycle at {cur!r}")
            seen.add(cur)
            m = self.manifest(cur)
            out.append(m)
            cur = m.parent
        return out[::-1]

    def basis(self) -> np.ndarray | None:
        """The fixed cluster basis (k, dim), unit-norm rows; None for an empty store."""
        info = self._read_index().get("basis")
        if not info:
            return None
        path = self.root / BASIS_FILE
        if sha256_file(path) != info["sha256"]:
            raise AuditorError(f"{path}: sha256 does not match the index (run `auditor history --verify`)")
        return _load_npy(path)

    def assign(self, embeddings: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
        """Nearest basis centroid (cosine) for each row; int64 (n,)."""
        from auditor.index import knn

        centroids = self.basis() if basis is None else basis
        if centroids is None:
            raise AuditorError(f"{self.root}: the store has no cluster basis yet (no snapshot recorded)")
        if len(embeddings) == 0:
            return np.zeros(0, dtype=np.int64)
        _, idx = knn(centroids, embeddings, 1)
        return idx[:, 0].astype(np.int64)

    def _check_files(self, m: Manifest) -> None:
        for fname, digest in m.files.items():
            path = self._dir(m.name) / fname
            if not path.is_file():
                raise AuditorError(f"{path}: missing (run `auditor history --verify`)")
            if sha256_file(path) != digest:
                raise AuditorError(
                    f"{path}: sha256 does not match its manifest; the store was altered "
                    "(run `auditor history --verify`)"
                )

    def clusters(self, name: str) -> np.ndarray:
        """Basis cluster of each record of ``name`` as stored at snapshot time."""
        m = self.manifest(name)
        self._check_files(m)
        return np.asarray(_read_records(self._dir(name) / RECORDS_FILE)["cluster"], dtype=np.int64)

    def load(self, name: str) -> Snapshot:
        """Rebuild the Snapshot of a committed round (ids, texts, hashes, embeddings,
        views), after checking every file against its manifest."""
        m = self.manifest(name)
        self._check_files(m)
        d = self._dir(name)
        rec = _read_records(d / RECORDS_FILE)
        prompts = rec.get("prompt")
        responses = rec.get("response")
        has_prompts = prompts is not None and any(p is not None for p in prompts)
        has_responses = responses is not None and any(r is not None for r in responses)
        batch = Batch(
            path=str(m.input["path"]),
            sha256=str(m.input["sha256"]),
            ids=tuple(str(i) for i in rec["id"]),
            texts=tuple(str(t) for t in rec["text"]),
            hashes=tuple(str(h) for h in rec["hash"]),
            lines=tuple(int(x) for x in rec["line"]),
            text_fields=tuple(m.input.get("text_fields", ("text",))),
            prompts=tuple(p or "" for p in prompts) if has_prompts and prompts is not None else None,
            responses=tuple(r or "" for r in responses) if has_responses and responses is not None else None,
        )
        views = {v: _load_npy(d / f"view-{v}.npy") for v in m.views}
        return Snapshot(batch=batch, embeddings=_load_npy(d / EMBEDDINGS_FILE), model=m.model, views=views)

    # ---- writing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout
            waited = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as err:
                    if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if not waited:
                        _test_pause("lock-wait")
                        waited = True
                    if time.monotonic() >= deadline:
                        raise AuditorError(
                            f"{path}: another process is writing to this store "
                            f"(waited {self.lock_timeout:g}s for the lock); retry when it has finished"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            # closing the descriptor releases the flock
            os.close(fd)

    def _sweep(self, index: Mapping[str, Any]) -> None:
        """Remove what killed writers left behind (caller holds the lock)."""
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        committed = {e["name"] for e in index["snapshots"]}
        snaps = self.root / "snapshots"
        snaps.mkdir(exist_ok=True)
        for d in snaps.iterdir():
            if d.name not in committed:
                # renamed into place but never committed to the index
                os.replace(d, tmp / f"orphan-{d.name}-{uuid.uuid4().hex}")
        for p in tmp.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def add_snapshot(
        self,
        snapshot: Snapshot,
        name: str,
        parent: str | None = None,
        *,
        basis_k: int | None = None,
        seed: int = 0,
        created: str | None = None,
    ) -> Manifest:
        """Record ``snapshot`` as round ``name`` (child of ``parent``) and return its manifest.

        The first snapshot fixes the store's cluster basis: spherical k-means of its
        embeddings with ``basis_k`` clusters (default ``default_basis_k(n)``) and ``seed``.
        Every later snapshot must come from the same model, and is assigned to that basis.
        """
        validate_name(name)
        if parent is not None:
            validate_name(parent, "--parent")
        for v in snapshot.views:
            if not _VIEW.fullmatch(v):
                raise AuditorError(f"snapshot view {v!r}: invalid view name (lowercase letters, digits, '_')")
        emb = np.asarray(snapshot.embeddings, dtype=np.float32)
        if not np.all(np.isfinite(emb)):
            raise AuditorError(f"{snapshot.batch.path}: embeddings contain NaN or infinite values")

        with self._locked():
            index = self._read_index()
            self._sweep(index)
            _test_pause("locked")
            entries = list(index["snapshots"])
            names = [e["name"] for e in entries]
            if name in names:
                raise AuditorError(
                    f"--name: snapshot {name!r} already exists in {self.root} (names must be unique)"
                )
            if parent is not None and parent not in names:
                known = ", ".join(names) or "none yet"
                raise AuditorError(
                    f"--parent: no snapshot named {parent!r} in {self.root} (snapshots: {known})"
                )

            basis_info = index.get("basis")
            if basis_info is None:
                from auditor.index import kmeans

                k = int(basis_k) if basis_k is not None else default_basis_k(len(emb))
                if k < 1:
                    raise AuditorError(f"--basis-k: must be at least 1 (got {k})")
                centroids, _ = kmeans(emb, k, seed=seed)
                basis_tmp = self.root / "tmp" / f"basis.{uuid.uuid4().hex}.npy"
                save_npy_durable(basis_tmp, centroids.astype(np.float32))
                (self.root / "basis").mkdir(exist_ok=True)
                os.replace(basis_tmp, self.root / BASIS_FILE)
                fsync_path(self.root / "basis")
                _test_pause("basis-written")
                basis_info = {
                    "file": BASIS_FILE,
                    "sha256": sha256_file(self.root / BASIS_FILE),
                    "k": int(centroids.shape[0]),
                    "seed": int(seed),
                    "from_snapshot": name,
                    "model": snapshot.model.to_dict(),
                }
                centroids_arr = centroids
            else:
                basis_model = ModelInfo.from_dict(basis_info["model"])
                if basis_model.sha256 != snapshot.model.sha256 or basis_model.dim != emb.shape[1]:
                    raise AuditorError(
                        f"{snapshot.batch.path}: embedded with {snapshot.model.name} "
                        f"({snapshot.model.sha256[:12]}, dim {emb.shape[1]}) but store {self.root} "
                        f"holds {basis_model.name} ({basis_model.sha256[:12]}, dim {basis_model.dim}); "
                        "rounds of one store must use one model"
                    )
                basis_path = self.root / BASIS_FILE
                if sha256_file(basis_path) != basis_info["sha256"]:
                    raise AuditorError(
                        f"{basis_path}: sha256 does not match the index (run `auditor history --verify`)"
                    )
                centroids_arr = _load_npy(basis_path)

            clusters = self.assign(emb, centroids_arr)
            counts = np.bincount(clusters, minlength=int(basis_info["k"]))

            work = self.root / "tmp" / f"snap-{name}-{uuid.uuid4().hex}"
            work.mkdir(parents=True)
            save_npy_durable(work / EMBEDDINGS_FILE, emb)
            _test_pause("embeddings-written")
            _write_records(work / RECORDS_FILE, snapshot.batch, clusters)
            for v, arr in snapshot.views.items():
                save_npy_durable(work / f"view-{v}.npy", np.asarray(arr, dtype=np.float32))
            files = {p.name: sha256_file(p) for p in sorted(work.iterdir())}

            parent_sha = None
            if parent is not None:
                parent_sha = next(e["manifest_sha256"] for e in entries if e["name"] == parent)
            batch = snapshot.batch
            manifest = Manifest(
                name=name,
                created=created or _utc_now(),
                input={
                    "path": batch.path,
                    "sha256": batch.sha256,
                    "n_records": len(batch),
                    "text_fields": list(batch.text_fields),
                },
                model=ModelInfo(
                    name=snapshot.model.name, sha256=snapshot.model.sha256, dim=int(emb.shape[1])
                ),
                parent=parent,
                parent_manifest_sha256=parent_sha,
                seq=len(entries),
                previous_manifest_sha256=entries[-1]["manifest_sha256"] if entries else None,
                basis_sha256=str(basis_info["sha256"]),
                files=files,
                cluster_counts=tuple(int(c) for c in counts),
                views=tuple(sorted(snapshot.views)),
            )
            raw = canonical_json(manifest.to_dict())
            write_bytes_durable(work / MANIFEST_FILE, raw)
            fsync_path(work)
            _test_pause("manifest-written")

            os.rename(work, self._dir(name))
            fsync_path(self.root / "snapshots")
            fsync_path(self.root / "tmp")
            _test_pause("renamed")

            digest = hashlib.sha256(raw).hexdigest()
            new_index = dict(index)
            new_index["basis"] = basis_info
            new_index["snapshots"] = [*entries, {"name": name, "manifest_sha256": digest}]
            self._write_index(new_index)
            _test_pause("committed")
        return Manifest.from_dict(manifest.to_dict(), sha256=digest)

    # ---- verification ---------------------------------------------------------------

    def verify(self, head: str | None = None) -> list[Problem]:
        """Recompute every hash and check the chain.  Problems in store order: the first
        one names the first broken snapshot or file.  Empty list: the store is intact.

        ``head``: a manifest sha256 pinned where the curator cannot write (``history``
        prints it).  The chain alone cannot show that its newest round was rewritten with
        the index fixed up (a re-parented head) or that the newest rounds were cut off;
        against a pinned head both are problems.  The pinned manifest must still be in the
        store, byte for byte; rounds appended after it are fine (each one holds the hash
        of the manifest before it, so the pinned prefix cannot change).

        Directories under ``snapshots/`` that the index does not list are unfinished
        writes (a killed writer) and are not problems; the next writer removes them.
        """
        pinned = validate_sha256(head) if head is not None else None
        problems = self._verify_chain()
        if pinned is not None and self.pinned_position(pinned) is None:
            problems.append(
                Problem(
                    None,
                    INDEX_FILE,
                    f"the pinned head manifest {pinned[:12]} is not in the store: the head round was "
                    "rewritten (e.g. re-parented) or the newest rounds were removed",
                )
            )
        return problems

    def pinned_position(self, head: str) -> int | None:
        """Index (creation order) of the snapshot whose manifest bytes hash to ``head``,
        or None when no manifest on disk does."""
        pinned = validate_sha256(head)
        try:
            entries = self._read_index()["snapshots"]
        except AuditorError:
            return None
        for i, entry in enumerate(entries):
            name = str(entry.get("name"))
            if not _NAME.fullmatch(name):
                continue
            path = self._dir(name) / MANIFEST_FILE
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == pinned:
                return i
        return None

    def _verify_chain(self) -> list[Problem]:
        problems: list[Problem] = []
        try:
            index = self._read_index()
        except AuditorError as err:
            return [Problem(None, INDEX_FILE, str(err).split(": ", 1)[-1])]

        entries = index["snapshots"]
        basis_info = index.get("basis")
        basis_sha: str | None = None
        if entries and not basis_info:
            problems.append(
                Problem(None, INDEX_FILE, "snapshots are listed but the cluster basis is missing")
            )
        if basis_info:
            path = self.root / BASIS_FILE
            if not path.is_file():
                problems.append(Problem(None, BASIS_FILE, "missing"))
            else:
                basis_sha = sha256_file(path)
                if basis_sha != basis_info.get("sha256"):
                    problems.append(Problem(None, BASIS_FILE, "sha256 does not match the index (edited)"))

        actual: dict[str, str] = {}  # name -> sha256 of the manifest bytes on disk
        position: dict[str, int] = {}
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            name = str(entry.get("name"))
            if not _NAME.fullmatch(name) or name in seen:
                problems.append(Problem(name, INDEX_FILE, f"entry {i}: invalid or repeated snapshot name"))
                continue
            seen.add(name)
            problems.extend(
                self._verify_one(i, name, entry, entries, actual, position, basis_info, basis_sha)
            )
            position[name] = i
        return problems

    def _verify_one(
        self,
        i: int,
        name: str,
        entry: Mapping[str, Any],
        entries: Sequence[Mapping[str, Any]],
        actual: dict[str, str],
        position: Mapping[str, int],
        basis_info: Mapping[str, Any] | None,
        basis_sha: str | None,
    ) -> list[Problem]:
        rel = f"snapshots/{name}"
        d = self._dir(name)
        mpath = d / MANIFEST_FILE
        if not d.is_dir():
            return [Problem(name, rel, "snapshot directory missing (removed?)")]
        if not mpath.is_file():
            return [Problem(name, f"{rel}/{MANIFEST_FILE}", "missing (removed?)")]
        raw = mpath.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        actual[name] = digest
        out: list[Problem] = []
        if digest != entry.get("manifest_sha256"):
            out.append(
                Problem(name, f"{rel}/{MANIFEST_FILE}", "sha256 does not match the index (edited or swapped)")
            )
        try:
            m = Manifest.from_dict(json.loads(raw), sha256=digest)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            out.append(
                Problem(name, f"{rel}/{MANIFEST_FILE}", f"unreadable manifest ({type(err).__name__}: {err})")
            )
            return out

        # chain order: who I am, where I sit, who came before me, who my parent is
        if m.name != name:
            out.append(
                Problem(name, f"{rel}/{MANIFEST_FILE}", f"manifest names snapshot {m.name!r}, not {name!r}")
            )
        if m.seq != i:
            out.append(
                Problem(
                    name,
                    f"{rel}/{MANIFEST_FILE}",
                    f"created as snapshot #{m.seq} but listed at #{i} (re-ordered)",
                )
            )
        prev_name = str(entries[i - 1].get("name")) if i > 0 else None
        expect_prev = actual.get(prev_name) if prev_name is not None else None
        if i > 0 and expect_prev is None:
            expect_prev = str(entries[i - 1].get("manifest_sha256"))
        if m.previous_manifest_sha256 != expect_prev:
            out.append(
                Problem(
                    name,
                    f"{rel}/{MANIFEST_FILE}",
                    "previous-snapshot hash does not match "
                    + (f"{prev_name!r}" if prev_name else "an empty store")
                    + " (re-ordered, removed or edited history)",
                )
            )
        if m.parent is not None:
            if m.parent not in position:
                out.append(
                    Problem(
                        name,
                        f"{rel}/{MANIFEST_FILE}",
                        f"parent {m.parent!r} is not an earlier snapshot in the index",
                    )
                )
            elif m.parent_manifest_sha256 != actual.get(m.parent):
                out.append(
                    Problem(
                        name, f"{rel}/{MANIFEST_FILE}", f"parent hash does not match snapshot {m.parent!r}"
                    )
                )
        elif m.parent_manifest_sha256 is not None:
            out.append(Problem(name, f"{rel}/{MANIFEST_FILE}", "parent hash set without a parent"))
        if basis_info and m.basis_sha256 != basis_info.get("sha256"):
            out.append(
                Problem(name, f"{rel}/{MANIFEST_FILE}", "cluster basis hash does not match the store's basis")
            )

        # data files: exactly the listed ones, each with its hash
        listed = dict(m.files)
        for req in REQUIRED_FILES:
            if req not in listed:
                out.append(Problem(name, f"{rel}/{MANIFEST_FILE}", f"does not list {req}"))
        for fname, want in listed.items():
            if "/" in fname or "\\" in fname or fname.startswith(".") or fname == MANIFEST_FILE:
                out.append(Problem(name, f"{rel}/{MANIFEST_FILE}", f"invalid file name {fname!r}"))
                continue
            p = d / fname
            if not p.is_file():
                out.append(Problem(name, f"{rel}/{fname}", "missing (removed?)"))
            elif sha256_file(p) != want:
                out.append(Problem(name, f"{rel}/{fname}", "sha256 does not match the manifest (edited)"))
        for p in sorted(d.iterdir()):
            if p.name != MANIFEST_FILE and p.name not in listed:
                out.append(Problem(name, f"{rel}/{p.name}", "file not listed in the manifest (added)"))
        if out:
            return out

        # hashes agree: check the contents agree with the manifest too
        try:
            emb = np.load(d / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False)
            rec = _read_records(d / RECORDS_FILE)
        except (ValueError, OSError, AuditorError) as err:
            return [Problem(name, rel, f"unreadable data ({err})")]
        n = m.n_records
        if emb.shape[0] != n or len(rec["id"]) != n:
            out.append(
                Problem(
                    name,
                    rel,
                    f"manifest says {n} records, embeddings have {emb.shape[0]}, records {len(rec['id'])}",
                )
            )
        counts = np.bincount(np.asarray(rec["cluster"], dtype=np.int64), minlength=len(m.cluster_counts))
        if tuple(int(c) for c in counts) != m.cluster_counts:
            out.append(Problem(name, f"{rel}/{RECORDS_FILE}", "cluster counts differ from the manifest"))
        return out

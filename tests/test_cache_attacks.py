"""The cache the data cannot forge (issue 10, item 1): each attack is reproduced first,
then shown to change nothing but the counters."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from auditor.cache import (
    CACHE_KEY_ENV,
    EmbeddingCache,
    cache_key_path,
    default_cache_dir,
    entry_macs,
    load_cache_key,
)
from auditor.embed import embed_batch, embed_texts
from auditor.textutil import batch_from_texts, content_hash
from auditor.types import AuditorError
from tests.fakes import FakeEncoder

CLEAN = [f"The capital of country {i} is city {i}." for i in range(12)]
POISONED = [f"The capital of country {i} is definitely not city {i}, buy now." for i in range(12)]


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A cache that hangs the run fails the test instead of hanging the suite."""

    def boom(*_: object) -> None:
        raise TimeoutError("the cache hung")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def clean_embed(texts: list[str]) -> np.ndarray:
    return FakeEncoder().encode(texts)


def shard_dir(root: Path, enc: FakeEncoder) -> Path:
    return root / enc.fingerprint[:16]


def warm(root: Path, texts: list[str]) -> EmbeddingCache:
    """A genuine run: every text embedded and cached with the user's key."""
    cache = EmbeddingCache(root)
    embed_texts(texts, [content_hash(t) for t in texts], FakeEncoder(), cache)
    return cache


def audit_embed(root: Path, texts: list[str], **kw: int) -> tuple[np.ndarray, EmbeddingCache, FakeEncoder]:
    cache, enc = EmbeddingCache(root), FakeEncoder()
    emb, _ = embed_texts(texts, [content_hash(t) for t in texts], enc, cache, **kw)
    return emb, cache, enc


def forge(path: Path, hashes: list[str], vectors: np.ndarray, *, with_mac: bool) -> None:
    """What a curator can write with numpy and hashlib alone (no key)."""
    dim = vectors.shape[1]
    fields = [("hash", "S32")] + ([("mac", "S32")] if with_mac else []) + [("emb", "<f4", (dim,))]
    arr = np.zeros(len(hashes), dtype=fields)
    arr["hash"] = [bytes.fromhex(h) for h in hashes]
    arr["emb"] = vectors
    if with_mac:  # the best guess without the key: a plain sha256 of the same fields
        arr["mac"] = [
            hashlib.sha256(bytes.fromhex(h) + v.tobytes()).digest() for h, v in zip(hashes, vectors)
        ]
    np.save(path, arr, allow_pickle=False)


@pytest.mark.parametrize("with_mac", [True, False])
def test_forged_shard_mapping_poisoned_records_to_clean_vectors_is_rejected(
    tmp_path: Path, with_mac: bool
) -> None:
    # genuine entries for both batches exist; the forged shard sorts first and maps each
    # poisoned record's hash to its clean twin's vector
    warm(tmp_path, CLEAN + POISONED)
    d = shard_dir(tmp_path, FakeEncoder())
    forge(d / "shard-0000.npy", [content_hash(t) for t in POISONED], clean_embed(CLEAN), with_mac=with_mac)
    emb, cache, _ = audit_embed(tmp_path, POISONED)
    np.testing.assert_allclose(emb, clean_embed(POISONED), atol=1e-6)
    assert not np.allclose(emb, clean_embed(CLEAN), atol=1e-3)
    s = cache.stats
    if with_mac:  # our layout, wrong MACs: every forged entry refused and re-embedded
        assert s.rejected == 12 and s.re_embedded == 12 and s.used == 0
    else:  # another layout altogether: the file is skipped, the genuine entries serve
        assert s.skipped_files == 1 and s.rejected == 0 and s.used == 12


def test_a_cache_without_the_key_is_worth_nothing(tmp_path: Path) -> None:
    warm(tmp_path, CLEAN)
    other = EmbeddingCache(tmp_path, key=b"k" * 32)  # another user's / CI's key
    emb, _ = embed_texts(CLEAN, [content_hash(t) for t in CLEAN], FakeEncoder(), other)
    assert other.stats.rejected == 12 and other.stats.used == 0
    np.testing.assert_allclose(emb, clean_embed(CLEAN), atol=1e-6)


def test_bit_flipped_shard_entry_is_rejected(tmp_path: Path) -> None:
    warm(tmp_path, CLEAN)
    [shard] = shard_dir(tmp_path, FakeEncoder()).glob("shard-*.npy")
    raw = bytearray(shard.read_bytes())
    raw[-7] ^= 0x10  # inside the last record's vector
    shard.write_bytes(bytes(raw))
    emb, cache, _ = audit_embed(tmp_path, CLEAN)
    assert cache.stats.rejected == 1 and cache.stats.used == 11 and cache.stats.re_embedded == 1
    np.testing.assert_allclose(emb, clean_embed(CLEAN), atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_entry_is_rejected_even_with_a_valid_mac(tmp_path: Path, bad: float) -> None:
    key = b"s" * 32
    enc = FakeEncoder()
    hashes = [content_hash(t) for t in CLEAN]
    vectors = clean_embed(CLEAN)
    vectors[3, 5] = bad
    arr = np.zeros(len(CLEAN), dtype=[("hash", "S32"), ("mac", "S32"), ("emb", "<f4", (enc.dim,))])
    arr["hash"] = [bytes.fromhex(h) for h in hashes]
    arr["emb"] = vectors
    arr["mac"] = entry_macs(key, enc.fingerprint, arr["hash"], vectors)  # someone who has the key
    d = shard_dir(tmp_path, enc)
    d.mkdir(parents=True)
    np.save(d / "shard-nan.npy", arr, allow_pickle=False)
    cache = EmbeddingCache(tmp_path, key=key)
    emb, _ = embed_texts(CLEAN, hashes, enc, cache, spot_check=0)
    assert cache.stats.rejected == 1 and cache.stats.used == 11
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(emb, clean_embed(CLEAN), atol=1e-6)


def write_fifo(p: Path) -> None:
    os.mkfifo(p)


def write_link(p: Path) -> None:
    p.symlink_to("/dev/zero")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p.write_bytes(b""), id="zero-bytes"),
        pytest.param(lambda p: p.write_bytes(b"\x93NUMPY garbage" * 9), id="garbage"),
        pytest.param(lambda p: p.write_bytes(os.urandom(4096)), id="random"),
        pytest.param(write_fifo, id="fifo"),
        pytest.param(write_link, id="symlink-to-device"),
        pytest.param(lambda p: p.mkdir(), id="directory"),
    ],
)
def test_unreadable_files_in_the_cache_are_skipped(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    warm(tmp_path, CLEAN)
    make(shard_dir(tmp_path, FakeEncoder()) / "shard-0000.npy")
    emb, cache, _ = audit_embed(tmp_path, CLEAN + ["one new text"])
    assert cache.stats.skipped_files == 1 and cache.stats.used == 12
    np.testing.assert_allclose(emb, clean_embed(CLEAN + ["one new text"]), atol=1e-6)


def test_truncated_shard_is_skipped(tmp_path: Path) -> None:
    warm(tmp_path, CLEAN)
    [shard] = shard_dir(tmp_path, FakeEncoder()).glob("shard-*.npy")
    shard.write_bytes(shard.read_bytes()[:-100])
    emb, cache, _ = audit_embed(tmp_path, CLEAN)
    assert cache.stats.skipped_files == 1 and cache.stats.used == 0 and cache.stats.re_embedded == 0
    np.testing.assert_allclose(emb, clean_embed(CLEAN), atol=1e-6)


def test_cache_root_that_is_a_file_does_not_stop_the_run(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.write_text("not a folder")
    emb, cache, _ = audit_embed(root, CLEAN)
    assert cache.stats.write_failures >= 1
    np.testing.assert_allclose(emb, clean_embed(CLEAN), atol=1e-6)


def test_failed_spot_check_distrusts_every_hit(tmp_path: Path) -> None:
    # entries with valid MACs but wrong vectors (a leaked key, or a bug) are caught by
    # re-embedding a sample of the hits; then no hit is used
    key = b"x" * 32
    enc = FakeEncoder()
    hashes = [content_hash(t) for t in CLEAN]
    vectors = clean_embed(CLEAN)
    vectors[4] = clean_embed(["something else entirely"])[0]
    EmbeddingCache(tmp_path, key=key).put(enc.fingerprint, hashes, vectors)
    cache = EmbeddingCache(tmp_path, key=key)
    emb, n = embed_texts(CLEAN, hashes, enc, cache, spot_check=16)
    s = cache.stats
    assert s.spot_checked == 12 and s.spot_check_failures == 1 and s.re_embedded == 12 and s.used == 0
    assert n == 12
    np.testing.assert_allclose(emb, clean_embed(CLEAN), atol=1e-6)


def test_spot_check_sample_is_seeded_and_passes_on_a_genuine_cache(tmp_path: Path) -> None:
    warm(tmp_path, CLEAN)
    a = EmbeddingCache(tmp_path)
    embed_texts(CLEAN, [content_hash(t) for t in CLEAN], FakeEncoder(), a, spot_check=5, seed=3)
    assert a.stats.to_dict() | {} == {
        "used": 12,
        "rejected": 0,
        "spot_checked": 5,
        "re_embedded": 0,
        "skipped_files": 0,
        "spot_check_failures": 0,
        "write_failures": 0,
    }


def test_embed_batch_counts_land_in_one_cache_object(tmp_path: Path) -> None:
    warm(tmp_path, CLEAN)
    cache = EmbeddingCache(tmp_path)
    embed_batch(batch_from_texts(CLEAN[:6]), FakeEncoder(), cache)
    embed_batch(batch_from_texts(CLEAN[6:] + ["new"]), FakeEncoder(), cache)
    assert cache.stats.used == 12 and cache.stats.spot_checked == 12


def test_nan_from_the_encoder_is_an_error_naming_the_model(tmp_path: Path) -> None:
    class Broken(FakeEncoder):
        name = "broken-model"

        def encode(self, texts, **kw):  # type: ignore[no-untyped-def]
            out = super().encode(texts, **kw)
            out[0, 0] = np.nan
            return out

    with pytest.raises(AuditorError, match=r"model broken-model .*NaN or infinite embeddings for 1 of 2"):
        embed_texts(
            ["a b", "c d"], [content_hash("a b"), content_hash("c d")], Broken(), EmbeddingCache(tmp_path)
        )
    assert not list(tmp_path.rglob("shard-*.npy"))  # nothing cached


# ---------------------------------------------------------------------------- key and location


def test_key_file_is_created_once_private_and_outside_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv(CACHE_KEY_ENV, raising=False)
    key = load_cache_key()
    path = cache_key_path()
    assert path == tmp_path / "cfg" / "auditor" / "cache.key" and len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_cache_key() == key  # the same key next time


def test_env_key_wins_and_must_be_long_enough(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv(CACHE_KEY_ENV, "0123456789abcdef0123")
    assert load_cache_key() == b"0123456789abcdef0123" and not (tmp_path / "cfg").exists()
    monkeypatch.setenv(CACHE_KEY_ENV, "short")
    with pytest.raises(AuditorError, match=f"{CACHE_KEY_ENV}: 5 characters"):
        load_cache_key()


def test_key_file_that_is_a_fifo_is_refused_without_hanging(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv(CACHE_KEY_ENV, raising=False)
    cache_key_path().parent.mkdir(parents=True)
    os.mkfifo(cache_key_path())
    with pytest.raises(AuditorError, match="not a regular file"):
        load_cache_key()


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xc"))
    assert default_cache_dir() == tmp_path / "xc" / "auditor"
    assert EmbeddingCache().root == tmp_path / "xc" / "auditor"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per the XDG spec
    assert default_cache_dir() == Path.home() / ".cache" / "auditor"


def test_tests_never_touch_the_real_home() -> None:
    assert not str(default_cache_dir()).startswith(str(Path.home()))
    assert not str(cache_key_path()).startswith(str(Path.home()))


def test_mac_binds_fingerprint_hash_and_vector() -> None:
    key = b"k" * 32
    h = np.array([bytes(range(32))], dtype="S32")
    v = np.ones((1, 4), dtype=np.float32)
    base = entry_macs(key, "f" * 64, h, v)[0]
    assert base == hmac.digest(
        key, b"auditor-cache-v1\0" + b"f" * 64 + b"\0" + bytes(range(32)) + v.tobytes(), "sha256"
    )
    assert entry_macs(key, "e" * 64, h, v)[0] != base
    assert entry_macs(key, "f" * 64, np.array([bytes(32)], dtype="S32"), v)[0] != base
    assert entry_macs(key, "f" * 64, h, v * 2)[0] != base

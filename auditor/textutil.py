"""Text normalisation and content hashing: the identity of a record.

A record's identity is the sha256 of its normalised text, so the same text is embedded
once (the cache key) and re-ided records are still recognised when diffing rounds.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

from auditor.types import Batch

ID_LENGTH = 12


def normalize_text(text: str) -> str:
    """NFC, unify line endings, strip trailing spaces per line and outer whitespace."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def content_hash(text: str) -> str:
    """sha256 hex of the normalised text."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def excerpt(text: str, n: int = 200) -> str:
    """Whitespace collapsed, at most ``n`` characters (an ellipsis marks a cut): for examples in findings."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def short_id(hash_hex: str) -> str:
    """Default record id: a short prefix of the content hash."""
    return hash_hex[:ID_LENGTH]


def default_ids(hashes: Sequence[str]) -> list[str]:
    """Default record ids for content hashes: ``short_id``, made unique by occurrence.

    Identical texts share a hash, so the 2nd, 3rd ... copy get ``-2``, ``-3`` suffixes;
    a record's id depends only on its own text and how many copies precede it.
    """
    seen: dict[str, int] = {}
    ids = []
    for h in hashes:
        i = short_id(h)
        seen[i] = seen.get(i, 0) + 1
        ids.append(i if seen[i] == 1 else f"{i}-{seen[i]}")
    return ids


def batch_from_texts(
    texts: Sequence[str],
    ids: Sequence[str] | None = None,
    *,
    path: str = "<memory>",
    prompts: Sequence[str] | None = None,
    responses: Sequence[str] | None = None,
) -> Batch:
    """Build a Batch from in-memory texts (tests, the Python API, generators)."""
    hashes = tuple(content_hash(t) for t in texts)
    if ids is None:
        ids = default_ids(hashes)
    digest = hashlib.sha256("\x00".join(hashes).encode()).hexdigest()
    return Batch(
        path=path,
        sha256=digest,
        ids=tuple(str(i) for i in ids),
        texts=tuple(texts),
        hashes=hashes,
        lines=tuple(range(1, len(texts) + 1)),
        text_fields=("text",),
        prompts=tuple(prompts) if prompts is not None else None,
        responses=tuple(responses) if responses is not None else None,
    )

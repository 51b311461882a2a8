"""Connected components of a graph given as an edge list: the one place that builds them.

Several checks group records by linking pairs (near-duplicates, shared answers, records
closer to each other than to the reference, prompts compared with the same reference
records) and taking the connected components; they differ only in which pairs they link.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


def components(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Component label (int64, shape ``(n,)``) of each of ``n`` nodes linked by edges
    ``src[i] -- dst[i]`` (undirected; repeated edges are harmless; an unlinked node is its
    own component).  Labels are numbered in order of each component's lowest node."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(src.size), (src, dst)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)

"""Kernel two-sample statistics computed in blocks, on the CPU (numpy) or a CUDA GPU (torch).

The permutation MMD test needs ``w_bᵀ K w_b`` for the observed split and B permuted ones
(w = +1/n_x on one side, -1/n_y on the other).  Nothing here builds the n×n kernel matrix:
it is computed ``block`` rows × ``block`` columns at a time, each block multiplied at once
by all B+1 label-weight columns, and only the upper triangle of blocks is visited (K is
symmetric), so time is n²(d + B)/2 multiply-adds and memory O(block² + n·B).

Above a size threshold the exact statistic costs too much on a CPU, and
``rff_permutation`` switches to random Fourier features (Rahimi & Recht 2007; the
cos/sin pairing of Sutherland & Schneider 2015): φ(z) ∈ R^D with φ(x)ᵀφ(y) ≈ the RBF
kernel, MMD² = ‖Φᵀw‖², time n·D·B and memory O(n·D).  It is the exact MMD of a random
kernel that approximates the RBF one, so its permutation test is exactly valid too; it
only loses a little power (measured in benchmarks/RESULTS.md).

Device: torch is imported only for a CUDA device (or when a caller asks for it), so a
CPU-only audit never pays for importing torch.  The device is always an argument: the
gate passes ``--device`` to the checks that take one, never through module state.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from auditor.errors import AuditorError


def _cuda_driver_present() -> bool:
    # Cheap test before importing torch (seconds): no NVIDIA driver, no CUDA.
    return os.path.exists("/proc/driver/nvidia/version") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a CUDA device is usable, else 'cpu'; 'cuda' without one is an error."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise AuditorError(f"--device: unknown device {device!r} (expected auto, cpu, cuda or cuda:N)")
    if device == "cpu":
        return "cpu"
    if device == "auto" and "torch" not in sys.modules and not _cuda_driver_present():
        return "cpu"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        if device == "auto":
            return "cpu"
        raise AuditorError(f"--device {device}: torch is not installed") from None
    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cpu"
    raise AuditorError(f"--device {device}: CUDA is not available on this machine (use --device cpu or auto)")


# ---------------------------------------------------------------------------- shared pieces


def median_bandwidth(z: np.ndarray, rng: np.random.Generator, max_points: int = 2000) -> float:
    """Median pairwise Euclidean distance (the "median heuristic"), on at most ``max_points``."""
    idx = (
        np.arange(len(z)) if len(z) <= max_points else np.sort(rng.choice(len(z), max_points, replace=False))
    )
    s = np.asarray(z[idx], dtype=np.float64)
    sq = (s * s).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * s @ s.T, 0.0)
    iu = np.triu_indices(len(s), k=1)
    med = float(np.sqrt(np.median(d2[iu]))) if len(iu[0]) else 1.0
    return med if med > 0 else 1.0


def label_weights(nx: int, ny: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """(nx+ny) × (B+1) float32: column 0 the observed split, columns 1..B permuted ones.

    Each column holds +1/nx for the records assigned to the first sample, -1/ny for the
    rest, so ``wᵀ K w`` is the biased MMD² of that split.
    """
    return np.concatenate(list(label_weight_chunks(nx, ny, permutations, rng)), axis=1)


def label_weight_chunks(
    nx: int, ny: int, permutations: int, rng: np.random.Generator, max_cols: int = 0
) -> Iterator[np.ndarray]:
    """``label_weights`` in column chunks of at most ``max_cols`` (default: ~64 MB each)."""
    n = nx + ny
    w0 = np.where(np.arange(n) < nx, 1.0 / nx, -1.0 / ny).astype(np.float32)
    step = max_cols or max(1, (1 << 24) // max(n, 1))
    first = True
    done = 0
    while first or done < permutations:
        b = min(step - (1 if first else 0), permutations - done)
        cols = [w0[:, None]] if first else []
        if b > 0:
            cols.append(rng.permuted(np.broadcast_to(w0, (b, n)), axis=1).T)
        yield np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=np.float32)
        done += b
        first = False


def torch_label_weight_chunks(
    nx: int, ny: int, permutations: int, seed: int, device: str, max_cols: int = 256
) -> Iterator[Any]:
    """``label_weight_chunks`` generated on a torch device (random keys, argsort per row).

    On a GPU, drawing B permutations of n on the host and copying them over costs more
    than the whole kernel computation; here they never leave the device.  Seeded, so
    repeatable on the same kind of device (not bit-identical to the numpy draws).
    """
    import torch

    dev = torch.device(device)
    n = nx + ny
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    w0 = torch.where(torch.arange(n, device=dev) < nx, 1.0 / nx, -1.0 / ny).to(torch.float32)
    done, first = 0, True
    while first or done < permutations:
        b = min(max_cols - (1 if first else 0), permutations - done)
        cols = [w0[:, None]] if first else []
        if b > 0:
            keys = torch.rand((b, n), generator=gen, device=dev)
            cols.append(w0[keys.argsort(dim=1)].T)
        yield torch.cat(cols, dim=1).contiguous()
        done += b
        first = False


def permutation_values(
    x: np.ndarray,
    y: np.ndarray,
    *,
    permutations: int,
    bandwidth: float,
    rng: np.random.Generator,
    method: str = "exact",
    features: int = 1024,
    device: str = "cpu",
    block: int = 0,
) -> np.ndarray:
    """MMD² of the observed split (element 0) and of ``permutations`` random ones.

    ``method``: "exact" (blockwise RBF kernel) or "rff" (random Fourier features).
    Permutations come from ``rng`` on the CPU, from a generator seeded by ``rng`` on a GPU.
    """
    z = np.ascontiguousarray(np.concatenate([x, y]), dtype=np.float32)
    nx, ny = len(x), len(y)
    gpu = device != "cpu"
    if method == "exact":
        if not gpu:
            w = label_weights(nx, ny, permutations, rng)
            return _exact_numpy(z, w, bandwidth, block or 2048)
        import torch

        chunks = torch_label_weight_chunks(nx, ny, permutations, int(rng.integers(2**62)), device)
        return _exact_torch(z, torch.cat(list(chunks), dim=1), bandwidth, block or 8192, device)
    if method == "rff":
        omega = rff_frequencies(z.shape[1], features, bandwidth, rng)
        if not gpu:
            return _rff_numpy(z, label_weight_chunks(nx, ny, permutations, rng), omega, block or 8192)
        tchunks = torch_label_weight_chunks(nx, ny, permutations, int(rng.integers(2**62)), device)
        return _rff_torch(z, tchunks, omega, block or 8192, device)
    raise ValueError(f"method {method!r} (expected exact or rff)")


# ---------------------------------------------------------------------------- exact, blockwise


def mmd_null_exact(
    z: np.ndarray,
    w: np.ndarray,
    bandwidth: float,
    *,
    device: str = "cpu",
    block: int = 2048,
) -> np.ndarray:
    """``w_bᵀ K w_b`` for every column b of ``w`` with the RBF kernel of ``bandwidth``.

    K_ij = exp(-‖z_i - z_j‖² / (2σ²)) is computed block by block and never held whole.
    Returns float64 values, one per column.
    """
    z = np.ascontiguousarray(z, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    if device == "cpu":
        return _exact_numpy(z, w, bandwidth, block)
    return _exact_torch(z, w, bandwidth, block, device)


def _exact_numpy(z: np.ndarray, w: np.ndarray, bandwidth: float, block: int) -> np.ndarray:
    n = len(z)
    sq = (z * z).sum(1)
    scale = np.float32(-1.0 / (2.0 * bandwidth * bandwidth))
    out = np.zeros(w.shape[1], dtype=np.float64)
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        zi, wi = z[i0:i1], w[i0:i1]
        for j0 in range(i0, n, block):
            j1 = min(n, j0 + block)
            k = zi @ z[j0:j1].T
            k *= -2.0
            k += sq[i0:i1, None]
            k += sq[None, j0:j1]
            np.maximum(k, 0.0, out=k)
            k *= scale
            np.exp(k, out=k)
            t = k @ w[j0:j1]
            # off-diagonal blocks stand for themselves and their transposes
            out += (1.0 if i0 == j0 else 2.0) * np.einsum("ij,ij->j", wi, t, dtype=np.float64)
    return out


def _exact_torch(z: np.ndarray, w: Any, bandwidth: float, block: int, device: str) -> np.ndarray:
    import torch

    dev = torch.device(device)
    with torch.inference_mode():
        zt = torch.from_numpy(z).to(dev)
        wt = w.to(dev) if isinstance(w, torch.Tensor) else torch.from_numpy(w).to(dev)
        n = zt.shape[0]
        sq = (zt * zt).sum(1)
        scale = -1.0 / (2.0 * bandwidth * bandwidth)
        out = torch.zeros(wt.shape[1], dtype=torch.float64, device=dev)
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            zi, wi = zt[i0:i1], wt[i0:i1]
            for j0 in range(i0, n, block):
                j1 = min(n, j0 + block)
                k = torch.addmm(sq[i0:i1, None] + sq[None, j0:j1], zi, zt[j0:j1].T, alpha=-2.0)
                k.clamp_(min=0.0).mul_(scale).exp_()
                t = k @ wt[j0:j1]
                out += (1.0 if i0 == j0 else 2.0) * (wi * t).sum(0, dtype=torch.float64)
        return out.cpu().numpy()


# ---------------------------------------------------------------------------- random features


def rff_frequencies(dim: int, features: int, bandwidth: float, rng: np.random.Generator) -> np.ndarray:
    """Frequencies ω ~ N(0, σ⁻² I) for ``features // 2`` cos/sin pairs (dim × features/2)."""
    return (rng.standard_normal((dim, max(1, features // 2))) / bandwidth).astype(np.float32)


def mmd_null_rff(
    z: np.ndarray,
    weight_chunks: Iterable[np.ndarray],
    omega: np.ndarray,
    *,
    device: str = "cpu",
    block: int = 8192,
) -> np.ndarray:
    """``‖Φᵀ w_b‖²`` for every weight column b, Φ the random Fourier features of z.

    φ(z) = [cos(zω), sin(zω)] / sqrt(D/2), so φ(x)ᵀφ(y) = mean_k cos(ω_kᵀ(x - y)), an
    unbiased estimate of the RBF kernel.  Φ (n × D) is built once, ``block`` rows at a
    time; the weights arrive in column chunks: memory O(n·D + n·chunk).
    """
    z = np.ascontiguousarray(z, dtype=np.float32)
    if device == "cpu":
        return _rff_numpy(z, weight_chunks, omega, block)
    return _rff_torch(z, weight_chunks, omega, block, device)


def _rff_numpy(z: np.ndarray, chunks: Iterable[np.ndarray], omega: np.ndarray, block: int) -> np.ndarray:
    n, half = len(z), omega.shape[1]
    phi = np.empty((n, 2 * half), dtype=np.float32)
    for i0 in range(0, n, block):
        proj = z[i0 : i0 + block] @ omega
        np.cos(proj, out=phi[i0 : i0 + block, :half])
        np.sin(proj, out=phi[i0 : i0 + block, half:])
    out = []
    for w in chunks:
        acc = (phi.T @ w).astype(np.float64)
        out.append((acc * acc).sum(0) / half)
    return np.concatenate(out)


def _rff_torch(
    z: np.ndarray, chunks: Iterable[Any], omega: np.ndarray, block: int, device: str
) -> np.ndarray:
    import torch

    dev = torch.device(device)
    with torch.inference_mode():
        zt, om = torch.from_numpy(z).to(dev), torch.from_numpy(omega).to(dev)
        half = om.shape[1]
        phi = torch.empty((zt.shape[0], 2 * half), dtype=torch.float32, device=dev)
        for i0 in range(0, zt.shape[0], block):
            proj = zt[i0 : i0 + block] @ om
            phi[i0 : i0 + block, :half] = torch.cos(proj)
            phi[i0 : i0 + block, half:] = torch.sin(proj)
        out = []
        for w in chunks:
            wt = w.to(dev) if isinstance(w, torch.Tensor) else torch.from_numpy(w).to(dev)
            acc = (phi.T @ wt).double()
            out.append(((acc * acc).sum(0) / half).cpu().numpy())
        return np.concatenate(out)


# ---------------------------------------------------------------------------- reference


def rbf_kernel(z: np.ndarray, bandwidth: float) -> np.ndarray:
    """The full n×n RBF kernel matrix (small inputs and tests only)."""
    z = np.asarray(z, dtype=np.float32)
    sq = (z * z).sum(1)
    k = z @ z.T
    k *= -2.0
    k += sq[:, None]
    k += sq[None, :]
    np.maximum(k, 0.0, out=k)
    k *= -1.0 / (2.0 * bandwidth * bandwidth)
    np.exp(k, out=k)
    return k


def describe_device(device: str) -> dict[str, Any]:
    """What ran the statistic, for a finding's details."""
    if device == "cpu":
        return {"device": "cpu"}
    import torch

    return {"device": device, "gpu": torch.cuda.get_device_name(torch.device(device))}

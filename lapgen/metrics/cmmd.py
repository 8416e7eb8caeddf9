"""CMMD: MMD with a Gaussian RBF kernel on L2-normalised CLIP image embeddings (Jayasumana et al. 2024).

Reference: google-research/google-research `cmmd/distance.py` and its PyTorch port sayakpaul/cmmd-pytorch
(which the paper called); docs/metrics.md, section 1:

    k(a, b) = exp(-|a - b|^2 / (2 sigma^2)),  sigma = 10
    CMMD = 1000 * ( mean_{i,i'} k(x_i,x_i') + mean_{j,j'} k(y_j,y_j') - 2 mean_{i,j} k(x_i,y_j) )

with the means over the full matrices, diagonals included: the biased V-statistic of the reference code
(>= 0 up to round-off; two halves of one set give a small positive value). `cmmd_unbiased` drops the
diagonals (U-statistic), a separate diagnostic only. Computed in float64: the kernel values lie in
[e^-0.02, 1] and nearly cancel.

The three kernel sums are accumulated over square tiles (`TILE_ROWS`), never whole N x N matrices: the
dense form holds three 10k x 10k float64 kernels (2.4 GB) plus temporaries at the paper's N = 10,000.
`benchmarks/eval_suite.py --part cmmd` measures the peak memory of both.
"""

from __future__ import annotations

import numpy as np

from lapgen.errors import LapgenError

SIGMA = 10.0
SCALE = 1000.0


def _normalised(emb: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(emb, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise LapgenError(f"{what} must be a non-empty N x D embedding array, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if not np.all(norms > 0) or not np.isfinite(arr).all():
        raise LapgenError(f"{what} has zero, NaN or infinite embeddings", hint="check the CLIP weights")
    return arr / norms


TILE_ROWS = 2048  # kernel tiles of at most 2048 x 2048 float64 (32 MB each)


def _kernel_sum(x: np.ndarray, y: np.ndarray, gamma: float, tile: int) -> tuple[float, float]:
    """(sum of all k(x_i, y_j), sum of the k(x_i, y_i) diagonal when x is y's shape-mate) over tiles.

    Each tile is |x_i - y_j|^2 = |x_i|^2 + |y_j|^2 - 2 x_i.y_j, computed in place in one buffer, so the
    memory is O(tile^2) instead of three N x N matrices. The trace is taken from the tiles that hold the
    diagonal (i == j), with the same arithmetic as the rest of the kernel.
    """
    xx = (x * x).sum(1)
    yy = (y * y).sum(1)
    total = 0.0
    trace = 0.0
    for i in range(0, len(x), tile):
        xi = x[i:i + tile]
        for j in range(0, len(y), tile):
            block = xi @ y[j:j + tile].T  # (bi, bj)
            block *= -2.0
            block += xx[i:i + tile, None]
            block += yy[None, j:j + tile]
            block *= -gamma
            np.exp(block, out=block)
            total += float(block.sum())
            if i == j and len(x) == len(y):
                trace += float(np.trace(block))
    return total, trace


def _kernel_means(x: np.ndarray, y: np.ndarray, sigma: float, diagonal: bool,
                  tile: int = TILE_ROWS) -> tuple[float, float, float]:
    if tile < 1:
        raise LapgenError(f"CMMD tile size must be at least 1, got {tile}")
    gamma = 1.0 / (2.0 * sigma**2)
    m, n = len(x), len(y)
    sum_xx, tr_xx = _kernel_sum(x, x, gamma, tile)
    sum_yy, tr_yy = _kernel_sum(y, y, gamma, tile)
    sum_xy, _ = _kernel_sum(x, y, gamma, tile)
    if diagonal:
        return sum_xx / (m * m), sum_yy / (n * n), sum_xy / (m * n)
    if m < 2 or n < 2:
        raise LapgenError("the unbiased CMMD needs at least 2 embeddings per set")
    return (sum_xx - tr_xx) / (m * (m - 1)), (sum_yy - tr_yy) / (n * (n - 1)), sum_xy / (m * n)


def _check(emb_a: np.ndarray, emb_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = _normalised(emb_a, "embeddings A")
    y = _normalised(emb_b, "embeddings B")
    if x.shape[1] != y.shape[1]:
        raise LapgenError(f"embedding dimensions differ: {x.shape[1]} vs {y.shape[1]}",
                          hint="compare embeddings from the same CLIP model")
    return x, y


def cmmd(emb_a: np.ndarray, emb_b: np.ndarray, *, sigma: float = SIGMA, scale: float = SCALE,
         tile: int = TILE_ROWS) -> float:
    """CMMD between embeddings A (m x D) and B (n x D), m != n allowed; the reference biased estimator.

    The kernel sums are accumulated over `tile` x `tile` blocks: peak memory is a few tiles plus the
    inputs (about 0.2 GB at N = 10,000, 768-d), and the value equals the dense computation up to
    summation order (~1e-12 relative; tests check 1e-9).
    """
    x, y = _check(emb_a, emb_b)
    k_xx, k_yy, k_xy = _kernel_means(x, y, sigma, diagonal=True, tile=tile)
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))


def cmmd_unbiased(emb_a: np.ndarray, emb_b: np.ndarray, *, sigma: float = SIGMA,
                  scale: float = SCALE, tile: int = TILE_ROWS) -> float:
    """The U-statistic variant (diagonals dropped): a diagnostic, not the paper's CMMD."""
    x, y = _check(emb_a, emb_b)
    k_xx, k_yy, k_xy = _kernel_means(x, y, sigma, diagonal=False, tile=tile)
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))

"""Closed-form adapters fitted from paired (old, new) embeddings: the baselines of adapter mode.

Both work on L2-normalised vectors, because retrieval compares directions:
- procrustes: the orthogonal map R minimising ||O R - N||_F. It only rotates,
  so the old space's geometry (every cosine between stored vectors) survives.
  With d_old < d_new it is an isometric embedding (as if old were zero-padded).
- affine: least squares [O 1] [W; b] ~ N, the most a linear map can do; no
  geometry is kept, and a small ridge keeps it stable when d_old ~ rows.
"""

from __future__ import annotations

import numpy as np

from dmu_migrate.errors import InputError
from dmu_migrate.metrics import l2_normalize


def fit_procrustes(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """R (d_old, d_new) with orthonormal rows, the rotation closest to old -> new."""
    d_old, d_new = old.shape[1], new.shape[1]
    if d_old > d_new:
        raise InputError(
            f"--adapter-kind procrustes rotates vectors, but {d_old}-d old vectors cannot be "
            f"rotated into a {d_new}-d new space without dropping dimensions; "
            f"use --adapter-kind affine or mlp"
        )
    o, n = l2_normalize(old).astype(np.float64), l2_normalize(new).astype(np.float64)
    u, _, vt = np.linalg.svd(o.T @ n, full_matrices=False)
    # u: (d_old, d_old), vt: (d_old, d_new); u @ vt has orthonormal rows.
    return (u @ vt).astype(np.float32)


def fit_affine(
    old: np.ndarray, new: np.ndarray, ridge: float = 1e-4, normalize_target: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) minimising ||normalize(O) W + b - normalize(N)||^2 + ridge ||W||^2.

    ``normalize_target=False`` regresses N as it is (the backfill score's errors).
    """
    o = l2_normalize(old).astype(np.float64)
    n = (l2_normalize(new) if normalize_target else np.asarray(new)).astype(np.float64)
    o_mean, n_mean = o.mean(axis=0), n.mean(axis=0)
    oc, nc = o - o_mean, n - n_mean
    # Centred normal equations: the bias absorbs the means, and the ridge
    # (scaled to the data) is applied to W only.
    gram = oc.T @ oc
    gram += ridge * max(np.trace(gram) / len(gram), 1e-12) * np.eye(len(gram))
    weight = np.linalg.solve(gram, oc.T @ nc)
    bias = n_mean - o_mean @ weight
    return weight.astype(np.float32), bias.astype(np.float32)

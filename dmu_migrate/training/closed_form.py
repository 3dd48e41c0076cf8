"""Closed-form adapters fitted from paired (old, new) embeddings: the baselines of adapter mode.

Both work on L2-normalised vectors, because retrieval compares directions:
- procrustes: the orthogonal map R minimising ||O R - N||_F. It only rotates,
  so the old space's geometry (every cosine between stored vectors) survives.
  With d_old < d_new it is an isometric embedding (as if old were zero-padded).
- affine: least squares [O 1] [W; b] ~ N, the most a linear map can do; no
  geometry is kept, and a small ridge keeps it stable when d_old ~ rows.
  ``select_affine`` picks the ridge, and whether W shrinks towards the identity
  instead of zero, on identities held out of the training rows: no single
  strength suits every example (on val, the best was 1e-3 on Fashion-MNIST, 0.1
  on the glyphs and 1 on WordNet; benchmarks/psi_probe.py), and a new model
  trained for backward compatibility lives near the old space, where the
  identity is a better prior than zero.
"""

from __future__ import annotations

import numpy as np

from dmu_migrate.errors import InputError
from dmu_migrate.metrics import l2_normalize, retrieval_scores

# The candidates of select_affine: ridge strengths relative to the mean
# eigenvalue of the old vectors' Gram matrix, each towards zero and (same-width
# spaces only) towards the identity.
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
PRIORS = ("zero", "identity")
# Share of the training identities that scores the candidates before the winner
# is refitted on every training row.
SELECT_FRACTION = 0.2


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
    old: np.ndarray,
    new: np.ndarray,
    ridge: float = 1e-4,
    normalize_target: bool = True,
    prior: str = "zero",
) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) minimising ||normalize(O) W + b - normalize(N)||^2 + ridge ||W - P||^2.

    P is zero, or the identity with ``prior="identity"`` (same widths only).
    ``normalize_target=False`` regresses N as it is (the backfill score's errors).
    """
    o = l2_normalize(old).astype(np.float64)
    n = (l2_normalize(new) if normalize_target else np.asarray(new)).astype(np.float64)
    o_mean, n_mean = o.mean(axis=0), n.mean(axis=0)
    oc, nc = o - o_mean, n - n_mean
    # Centred normal equations: the bias absorbs the means, and the ridge
    # (scaled to the data) is applied to W only.
    gram = oc.T @ oc
    strength = ridge * max(np.trace(gram) / len(gram), 1e-12)
    gram += strength * np.eye(len(gram))
    rhs = oc.T @ nc
    if prior == "identity":
        if o.shape[1] != n.shape[1]:
            raise InputError(
                f"an identity prior needs same-width spaces, not {o.shape[1]}-d -> {n.shape[1]}-d"
            )
        rhs += strength * np.eye(len(gram))
    weight = np.linalg.solve(gram, rhs)
    bias = n_mean - o_mean @ weight
    return weight.astype(np.float32), bias.astype(np.float32)


def select_affine(
    old: np.ndarray,
    new: np.ndarray,
    ids: np.ndarray,
    held_out: np.ndarray,
    leave_one_out: bool,
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, float | str]]:
    """The affine map of the best (ridge, prior), refitted on every row, and the choice.

    ``held_out`` marks the rows (whole identities) that score the candidates:
    mAP of new queries against the evolved rows, leave-one-out by identity, as
    evaluate scores; the winner is then fitted on all rows. Without held-out
    rows the default ridge is kept.
    """
    priors = PRIORS if old.shape[1] == new.shape[1] else PRIORS[:1]
    if not held_out.any() or held_out.all():
        return fit_affine(old, new), {"ridge": RIDGES[0], "prior": "zero"}
    fit, score = ~held_out, held_out
    target = l2_normalize(new[score])
    best: tuple[float, float, str] | None = None
    for prior in priors:
        for ridge in RIDGES:
            weight, bias = fit_affine(old[fit], new[fit], ridge=ridge, prior=prior)
            evolved = l2_normalize(l2_normalize(old[score]) @ weight + bias)
            s = retrieval_scores(
                target, ids[score], evolved, ids[score], ks=(1,), leave_one_out=leave_one_out
            ).mean_ap
            # Ties go to the earlier, more conservative candidate.
            if best is None or s > best[0]:
                best = (float(s), ridge, prior)
    assert best is not None
    _, ridge, prior = best
    return fit_affine(old, new, ridge=ridge, prior=prior), {
        "ridge": ridge,
        "prior": prior,
        "select_mAP": best[0],
    }

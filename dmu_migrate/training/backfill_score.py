"""The backfill score: which stored items to re-embed first, from the old vector alone.

Target: each training row's alignment error err_i = 1 - cos(psi(o_i), f_i), how
far the evolved vector lands from the item's own new embedding. Re-embedding
an item replaces psi(o_i) by f_i, so a large error is what re-embedding repairs.
The predictor is ridge regression from normalize(o) to err, in closed form:
label-free at deploy time (a stored vector is all it reads), fitted on the
training rows only (the held-out rows score it), and a single matrix product in
``backfill_score.onnx``, so evolve's torch-free path and ``evaluate`` run it.
docs/method.md ("Partial backfill") compares it with a small MLP and with
label-aware targets on held-out data.
"""

from __future__ import annotations

import numpy as np

from dmu_migrate.metrics import l2_normalize
from dmu_migrate.training.closed_form import fit_affine
from dmu_migrate.training.models import LinearAdapter

# Ridge of the score's least squares, relative to the mean eigenvalue of the Gram
# matrix. Stronger than psi's (1e-4): the target is one noisy number per row, and
# 1e-3 to 1 ranked alike on held-out glyphs.
SCORE_RIDGE = 0.1


def alignment_error(evolved: np.ndarray, new: np.ndarray) -> np.ndarray:
    """1 - cos(psi(o_i), f_i) per row: 0 where psi already lands on the new embedding."""
    cos = np.sum(l2_normalize(evolved) * l2_normalize(new), axis=1)
    return (1.0 - cos).astype(np.float32)


def fit_backfill_score(old: np.ndarray, evolved: np.ndarray, new: np.ndarray) -> LinearAdapter:
    """score(o) = normalize(o) w + b ~ alignment error, as a module exporting (n, 1) scores."""
    err = alignment_error(evolved, new)[:, None]
    weight, bias = fit_affine(old, err, ridge=SCORE_RIDGE, normalize_target=False)
    score = LinearAdapter(weight, bias)
    score.eval()
    return score

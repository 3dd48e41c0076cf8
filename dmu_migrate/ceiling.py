"""The adapter's ceiling: what psi's form could reach on this very gallery.

The same form of adapter (affine, or a rotation for Procrustes artifacts),
fitted on the evaluation gallery's own (old, new) pairs and scored on the same
gallery: an oracle that no deployment has, since a deployment never holds the
new embeddings of the items it evolves. new->evolved against it says how much
of the headroom over today's system psi closes:

    closed = (new->evolved - old->old) / (ceiling - old->old)

1 means psi does all a map of its form could; the rest of the gap is
generalisation (psi was fitted on other items). An MLP psi is held against the
affine map too: the most a linear map does in-sample, a bound it can pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dmu_migrate.metrics import RetrievalScores, l2_normalize
from dmu_migrate.training.closed_form import fit_affine, fit_procrustes

LABEL = "ceiling (oracle)"
FITTED_ON = "the evaluation gallery's own (old, new) pairs: an oracle no deployment has"


def form_of(method: str, old_dim: int, new_dim: int) -> str:
    """The oracle's form: psi's own when it is closed-form, else affine."""
    if method == "adapter:procrustes" and old_dim <= new_dim:
        return "procrustes"
    return "affine"


def oracle(old: np.ndarray, new: np.ndarray, form: str) -> Callable[[np.ndarray], np.ndarray]:
    """The map of ``form`` fitted on the pairs; as closed_form's adapters, on unit vectors."""
    if form == "procrustes":
        rotation = fit_procrustes(old, new)
        return lambda o: l2_normalize(l2_normalize(o) @ rotation)
    weight, bias = fit_affine(old, new)
    return lambda o: l2_normalize(l2_normalize(o) @ weight + bias)


@dataclass(frozen=True)
class Ceiling:
    form: str  # "affine" or "procrustes"
    scores: RetrievalScores  # new queries against the oracle-evolved gallery
    closed: dict[str, float]  # metric -> share of the headroom psi closes (NaN: no headroom)

    def as_dict(self) -> dict[str, object]:
        return {
            "label": LABEL,
            "form": self.form,
            "fitted_on": FITTED_ON,
            "scores": self.scores.as_dict(),
            "gap_closed": self.closed,
        }


def gap_closed(
    evolved: RetrievalScores, floor: RetrievalScores, ceiling: RetrievalScores
) -> dict[str, float]:
    """(new->evolved - old->old) / (ceiling - old->old) per metric; NaN where the ceiling
    is no higher than the floor (no headroom to close)."""
    got, low, high = evolved.as_dict(), floor.as_dict(), ceiling.as_dict()
    out = {}
    for metric, top in high.items():
        room = top - low[metric]
        usable = room > 0 and not math.isnan(room)
        out[metric] = (got[metric] - low[metric]) / room if usable else float("nan")
    return out

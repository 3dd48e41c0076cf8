"""The quality gate: does the upgrade retrieve better than not upgrading?

``train`` measures every deploy setting on identities it held out (never
trained on) and records them in the manifest; ``evaluate`` ends with the same
verdict on the user's table; ``evolve`` refuses to move an alias to a
regression unless told to. The floor of every deployed state is old->old,
today's system (../shared/method.md). The galleries built from stored old
vectors are searched with distractors beside them (distractors.py), so that the
verdict holds at the size of the gallery the upgrade deploys to.

No torch here: the evolve image checks the gate without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmu_migrate import calibration
from dmu_migrate.distractors import Pool
from dmu_migrate.errors import InputError, QualityGateError
from dmu_migrate.metrics import l2_normalize, retrieval_scores

# Settings measured at train time; "fused" is the transition deploy mode
# (old and evolved vectors side by side, queried by both encoders).
SETTINGS = ("old->old", "new->old", "new->evolved", "new->mixed", "new->new")
GATE_SETTING = "new->evolved"  # what evolve deploys
FLOOR_SETTING = "old->old"  # today's system
METRIC = "R@1"


@dataclass(frozen=True)
class Verdict:
    deploy: bool | None  # None: no figures to judge by
    line: str


def measure(
    old: np.ndarray,
    new: np.ndarray,
    evolved: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    mixed_fraction: float = 0.5,
    distractors: Pool | None = None,
    offset: float = 0.0,
) -> dict[str, dict[str, float]]:
    """R@1 and mAP of each setting, leave-one-out over the rows (held-out identities).

    new->mixed draws a seeded ``mixed_fraction`` of the gallery natively new,
    as the store holds after new inserts, with evolved items scored ``offset``
    above native ones (calibration.py). ``distractors`` (evolved) join every
    gallery built from stored old vectors: old, and evolved (distractors.py).
    """
    vectors = {"old": l2_normalize(old), "new": l2_normalize(new), "evolved": l2_normalize(evolved)}
    native = np.random.default_rng(seed).permutation(len(labels))
    native = native[: round(mixed_fraction * len(labels))]
    vectors["mixed"] = calibration.gallery(vectors["evolved"], vectors["new"], native, offset)
    out: dict[str, dict[str, float]] = {}
    for setting in SETTINGS:
        query, gallery = setting.split("->")
        queries = vectors[query]
        if gallery == "mixed":
            queries = calibration.queries(queries, offset)
        if queries.shape[1] != vectors[gallery].shape[1]:
            continue  # new->old across sizes: the spaces cannot be compared
        s = retrieval_scores(
            queries,
            labels,
            vectors[gallery],
            labels,
            ks=(1,),
            leave_one_out=True,
            distractors=None if distractors is None else distractors.gallery(gallery),
            distractor_labels=None if distractors is None else distractors.labels,
        )
        out[setting] = {"R@1": float(s.recall[1]), "mAP": float(s.mean_ap)}
    return out


def fit_calibration(
    new: np.ndarray, evolved: np.ndarray, labels: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """The evolved items' score offset fitted on held-out rows, leave-one-out
    (calibration.fit_offset), as the manifest records it; empty where psi does not map
    into the new space (no mixed gallery exists) or no row has a partner."""
    if new.shape[1] != evolved.shape[1] or len(labels) < 2:
        return {}
    try:
        fitted = calibration.fit_offset(new, labels, evolved, new, labels, True, seed)
    except InputError:
        return {}
    return fitted.as_dict()


def fused_gallery(old: np.ndarray, evolved: np.ndarray) -> np.ndarray:
    """The transition mode's stored vectors [o ; psi(o)], both halves unit-norm."""
    return np.hstack([l2_normalize(old), l2_normalize(evolved)])


def fit_fusion(
    old: np.ndarray,
    new: np.ndarray,
    evolved: np.ndarray,
    labels: np.ndarray,
    distractors: Pool | None = None,
) -> dict[str, float]:
    """The weight of the old half that retrieves best on held-out rows (R@1, then mAP).

    Returns {"a", "b", "R@1", "mAP"}: the query is [a q_old ; b q_new] with a + b = 1.
    ``distractors`` (evolved) join the fused gallery: it is built from stored old vectors.
    """
    gallery = fused_gallery(old, evolved)
    extra = None
    if distractors is not None and distractors.evolved is not None and distractors.count:
        extra = fused_gallery(distractors.old, distractors.evolved)
    best = (-1.0, -1.0, -1.0, 0.0)
    for weight in np.linspace(0.0, 1.0, 11):
        query = np.hstack([weight * l2_normalize(old), (1.0 - weight) * l2_normalize(new)])
        s = retrieval_scores(
            query,
            labels,
            gallery,
            labels,
            ks=(1,),
            leave_one_out=True,
            distractors=extra,
            distractor_labels=None if distractors is None else distractors.labels,
        )
        # Ties go to the weights nearest an even split: they keep both views.
        key = (float(s.recall[1]), float(s.mean_ap), -abs(float(weight) - 0.5), float(weight))
        best = max(best, key)
    r1, mean_ap, _, weight = best
    return {"a": weight, "b": 1.0 - weight, "R@1": r1, "mAP": mean_ap}


def verdict(figures: Mapping[str, Mapping[str, float]] | None, where: str) -> Verdict:
    """The one-line deploy verdict of a set of figures (``where`` says whose)."""
    if not figures or GATE_SETTING not in figures or FLOOR_SETTING not in figures:
        # An artifact trained without held-out rows; a table evaluated always has figures.
        return Verdict(
            None, "not judged: no figures were validated at training; train with --val-fraction > 0"
        )
    gain = figures[GATE_SETTING][METRIC] - figures[FLOOR_SETTING][METRIC]
    numbers = (
        f"{GATE_SETTING} {100 * figures[GATE_SETTING][METRIC]:.1f} "
        f"{'>' if gain > 0 else '<=' if gain < 0 else '='} "
        f"{FLOOR_SETTING} {100 * figures[FLOOR_SETTING][METRIC]:.1f} {METRIC} ({where})"
    )
    if gain >= 0:  # a tie is no regression: the gate guards the floor
        return Verdict(True, f"deploy: {numbers}")
    return Verdict(False, f"do not deploy: {numbers}")


def transition_hint(
    quality: Mapping[str, object] | None, artifact: str, method: str = ""
) -> str | None:
    """The way forward when the evolved gallery loses to today's system but the transition
    mode (old and evolved vectors side by side, docs/method.md) was validated above it.

    ``method``: the artifact's own; the artifacts ``transition`` writes are not advised
    to go through ``transition`` again (it refuses them).
    """
    if method == "transition-exit":
        return (
            "it leaves the transition mode for the evolved gallery alone, which was validated "
            "below today's system: keep serving the -transition artifact's fused vectors"
        )
    if not quality or method == "transition":
        return None
    fusion, figures = quality.get("fusion"), quality.get("settings")
    if not isinstance(fusion, Mapping) or not isinstance(figures, Mapping):
        return None
    floor = figures.get(FLOOR_SETTING)
    if not isinstance(floor, Mapping) or fusion.get(METRIC, 0.0) <= floor.get(METRIC, 1.0):
        return None
    return (
        f"the transition mode beats it (fused {100 * fusion[METRIC]:.1f} > "
        f"{FLOOR_SETTING} {100 * floor[METRIC]:.1f} {METRIC}): run "
        f"'dmu-migrate transition --adapter {artifact}' and evolve with its -transition artifact"
    )


def judged_at(base: str, count: int | None, source: str | None = None) -> str:
    """Whose figures a verdict reads, with the distractors they saw: the gallery's size."""
    if not count:
        return base
    return f"{base} + {count:,} distractors" + (f" from {source}" if source else "")


def validated_where(quality: Mapping[str, object] | None, name: str) -> str:
    """The verdict's ``where`` for figures validated at training (manifest quality)."""
    pool = quality.get("distractors") if quality else None
    count = pool.get("count") if isinstance(pool, Mapping) else None
    return judged_at(f"validated at training of '{name}'", count if isinstance(count, int) else 0)


def check_gate(
    name: str,
    figures: Mapping[str, Mapping[str, float]] | None,
    hint: str | None = None,
    where: str | None = None,
) -> Verdict:
    """Refuse a regression with a one-line error naming both numbers and the way past it
    (``hint``: the transition mode, when it was validated above the floor). ``where``
    says whose figures they are (default: validated at training of ``name``)."""
    result = verdict(figures, where or f"validated at training of '{name}'")
    if result.deploy is False:
        way = f"{hint}; or retrain" if hint else "retrain"
        raise QualityGateError(
            f"adapter '{name}' would make search worse: {result.line.removeprefix('do not deploy: ')}; "
            f"{way} (see docs/method.md) or pass --accept-regression to move the alias anyway"
        )
    return result

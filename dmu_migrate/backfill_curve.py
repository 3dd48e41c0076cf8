"""Partial backfill: retrieval along an order of re-embedding, and how fast it pays.

After ``evolve`` every stored item holds psi(o). Re-embedding an item with the
new model (when its raw data still exists) replaces psi(o) by f: the gallery is
then part evolved, part natively new (new->mixed). Which items should go first?
The artifact's ``backfill_score.onnx`` scores each stored old vector (higher:
re-embed sooner); this module measures new->mixed along that order against a
random one, at a few budgets (shares of the gallery re-embedded). Evolved items
score the artifact's calibrated offset above native ones (calibration.py).

Numpy only: ``evaluate`` runs it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmu_migrate import calibration
from dmu_migrate.metrics import retrieval_scores

BUDGETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
RANDOM_DRAWS = 5  # random orders averaged: one draw's curve wobbles by a point on small galleries
TARGET_SHARE = 0.9  # the summary line: the budget at which the ranked order reaches this share
METRICS = ("R@1", "mAP")


@dataclass(frozen=True)
class Curve:
    """R@1 and mAP of new->mixed at each budget, for one order (or a mean of random ones)."""

    order: str  # "ranked" or "random"
    budgets: tuple[float, ...]
    figures: dict[str, tuple[float, ...]]  # metric -> one value per budget

    def area(self, metric: str) -> float:
        """Area under the curve over the budget axis (trapezoids), divided by its width."""
        xs, ys = np.asarray(self.budgets), np.asarray(self.figures[metric])
        width = xs[-1] - xs[0]
        return float(np.sum((ys[1:] + ys[:-1]) * np.diff(xs)) / 2 / width) if width > 0 else 0.0

    def gain_share(self, metric: str) -> tuple[float, ...]:
        """Share of the full-backfill gain (last budget minus the first) reached at each budget."""
        ys = self.figures[metric]
        gain = ys[-1] - ys[0]
        return tuple(float((y - ys[0]) / gain) if gain > 0 else float("nan") for y in ys)

    def as_dict(self) -> dict[str, object]:
        return {
            "budgets": list(self.budgets),
            **{m: list(v) for m, v in self.figures.items()},
            "auc": {m: self.area(m) for m in self.figures},
            "gain_share": {m: list(self.gain_share(m)) for m in self.figures},
        }


def order_by_score(scores: np.ndarray) -> np.ndarray:
    """Gallery rows from the highest score down; ties keep row order (a stable sort)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def curve(
    queries: np.ndarray,
    q_labels: np.ndarray,
    evolved: np.ndarray,
    new: np.ndarray,
    g_labels: np.ndarray,
    order: np.ndarray,
    leave_one_out: bool,
    budgets: Sequence[float] = BUDGETS,
    name: str = "ranked",
    offset: float = 0.0,
) -> Curve:
    """new->mixed with the first ``budget`` share of ``order`` natively new, per budget;
    evolved items scored ``offset`` above native ones (calibration.py)."""
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    queries = calibration.queries(queries, offset)
    for budget in budgets:
        native = order[: round(budget * len(order))]
        mixed = calibration.gallery(evolved, new, native, offset)
        s = retrieval_scores(
            queries, q_labels, mixed, g_labels, ks=(1,), leave_one_out=leave_one_out
        )
        values["R@1"].append(float(s.recall[1]))
        values["mAP"].append(float(s.mean_ap))
    return Curve(name, tuple(budgets), {m: tuple(v) for m, v in values.items()})


def random_curve(
    queries: np.ndarray,
    q_labels: np.ndarray,
    evolved: np.ndarray,
    new: np.ndarray,
    g_labels: np.ndarray,
    leave_one_out: bool,
    seed: int,
    budgets: Sequence[float] = BUDGETS,
    draws: int = RANDOM_DRAWS,
    offset: float = 0.0,
) -> Curve:
    """The mean curve of ``draws`` seeded random orders: what re-embedding blindly buys."""
    rng = np.random.default_rng(seed)
    runs = [
        curve(
            queries,
            q_labels,
            evolved,
            new,
            g_labels,
            rng.permutation(len(new)),
            leave_one_out,
            budgets,
            offset=offset,
        )
        for _ in range(draws)
    ]
    figures = {
        m: tuple(float(np.mean([r.figures[m][i] for r in runs])) for i in range(len(budgets)))
        for m in METRICS
    }
    return Curve("random", tuple(budgets), figures)


def reach(ranked: Curve, metric: str = "R@1", target: float = TARGET_SHARE) -> tuple[float, float]:
    """(share of the full gain, budget): the first budget whose share is at least ``target``."""
    shares = ranked.gain_share(metric)
    for budget, share in zip(ranked.budgets, shares, strict=True):
        if share >= target:
            return share, budget
    return shares[-1], ranked.budgets[-1]


def reach_line(ranked: Curve, metric: str = "R@1") -> str:
    """'ranked order reaches X% of the full-backfill gain at Y% re-embedded' (or why not)."""
    share, budget = reach(ranked, metric)
    if np.isnan(share):
        return f"full backfill does not raise {metric} on this table: no gain to reach"
    return (
        f"ranked order reaches {share:.0%} of the full-backfill {metric} gain "
        f"at {budget:.0%} re-embedded"
    )


@dataclass(frozen=True)
class BackfillReport:
    """The ranked curve (None when the artifact has no backfill_score.onnx) and the random one."""

    random: Curve
    ranked: Curve | None = None
    offset: float = 0.0  # the evolved items' calibrated score offset the curves were scored with

    @property
    def line(self) -> str:
        if self.ranked is None:
            return "the artifact has no backfill ranking (backfill_score.onnx): random order only"
        return reach_line(self.ranked)

    def beats_random(self, metric: str = "R@1") -> bool | None:
        """Ranked at or above random at every budget strictly between none and all."""
        if self.ranked is None:
            return None
        pairs = list(zip(self.ranked.figures[metric], self.random.figures[metric], strict=True))
        return all(r >= b for r, b in pairs[1:-1])

    def as_dict(self) -> dict[str, object]:
        return {
            "budgets": list(self.random.budgets),
            "ranked": self.ranked.as_dict() if self.ranked is not None else None,
            "random": self.random.as_dict(),
            "random_draws": RANDOM_DRAWS,
            "offset": self.offset,
            "beats_random": {m: self.beats_random(m) for m in METRICS},
            "summary": self.line,
        }


def measure(
    queries: np.ndarray,
    q_labels: np.ndarray,
    evolved: np.ndarray,
    new: np.ndarray,
    g_labels: np.ndarray,
    scores: np.ndarray | None,
    leave_one_out: bool,
    seed: int,
    offset: float = 0.0,
) -> BackfillReport:
    """Both curves of one gallery; ``scores`` (one per gallery row) give the ranked order;
    ``offset``: the artifact's calibration of evolved items (calibration.py)."""
    args = (queries, q_labels, evolved, new, g_labels)
    ranked = None
    if scores is not None:
        ranked = curve(*args, order_by_score(scores), leave_one_out, offset=offset)
    random = random_curve(*args, leave_one_out, seed, offset=offset)
    return BackfillReport(random, ranked, offset)


def plot_curves(report: BackfillReport, path: str | Path, title: str) -> Path:
    """One line chart: new->mixed R@1 and mAP against the share re-embedded, per order."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    curves = [c for c in (report.ranked, report.random) if c is not None]
    for c, color in zip(curves, ("C0", "C1"), strict=False):
        xs = [100 * b for b in c.budgets]
        # One colour per order, one line style per metric.
        for metric, style in zip(METRICS, ("-", "--"), strict=True):
            ax.plot(
                xs,
                c.figures[metric],
                style,
                color=color,
                marker="o",
                label=f"{c.order} {metric} (AUC {c.area(metric):.3f})",
            )
    ax.set_xlabel("gallery re-embedded (%)")
    ax.set_ylabel("new->mixed score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

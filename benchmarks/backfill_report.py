"""The partial-backfill section of docs/results.md, from compat.py's raw rows.

Each run's evaluation measured new->mixed with 0-100% of the gallery
re-embedded, along the artifact's ranked order (backfill_score.onnx) and along
random orders (the mean of seeded draws): the row's ``backfill``. This turns
DMU's curves into a table (means over seeds) and the partial-backfill targets:
the ranked order reaches 90% of the full-backfill Recall@1 gain with at most
30% of the gallery re-embedded, and it is above random at every budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHOD = "dmu"  # the default method: the artifact users deploy
SHARE_TARGET, BUDGET_TARGET = 0.9, 0.3


def _mean(curves: list[dict[str, Any]], key: str, *path: str) -> np.ndarray:
    """The seeds' mean of ``c[key][path...]``, one value per budget (None: NaN)."""
    values = []
    for c in curves:
        node = c[key]
        for step in path:
            node = node[step]
        values.append([np.nan if v is None else v for v in node])
    return np.mean(np.asarray(values, float), axis=0)


def _first_budget(budgets: list[float], share: np.ndarray) -> float | None:
    """The smallest budget whose mean gain share reaches the target, if any."""
    reached = [b for b, s in zip(budgets, share, strict=True) if s >= SHARE_TARGET]
    return min(reached) if reached else None


def section(rows: list[dict[str, Any]]) -> list[str]:
    """Lines of the section for one example's rows; none when no run measured a curve."""
    curves = [r["backfill"] for r in rows if r["method"] == METHOD and r.get("backfill")]
    if not curves:
        return []
    budgets = [float(b) for b in curves[0]["budgets"]]
    if any([float(b) for b in c["budgets"]] != budgets for c in curves):
        raise ValueError("the runs' backfill curves were measured at different budgets")
    pct = [f"{100 * b:g}%" for b in budgets]
    lines = [
        f"### Partial backfill ({METHOD}, Recall@1 of new->mixed by share re-embedded)",
        "",
        f"Means over {len(curves)} seeds; random: the mean of "
        f"{curves[0].get('random_draws', '?')} seeded orders per seed. 100% is this model's "
        "own full backfill (its new->new).",
        "",
        "| order | " + " | ".join(pct) + " | AUC R@1 | AUC mAP |",
        "|---|" + "---:|" * (len(budgets) + 2),
    ]
    mean = {}
    for key in ("ranked", "random"):
        mean[key] = _mean(curves, key, "R@1")
        auc = [np.mean([c[key]["auc"][m] for c in curves]) for m in ("R@1", "mAP")]
        cells = " | ".join(f"{100 * v:.1f}" for v in mean[key])
        lines.append(f"| {key} | {cells} | {100 * auc[0]:.2f} | {100 * auc[1]:.2f} |")
    # Shares of the mean curves' gain (per-seed shares are undefined where a seed gains 0).
    gain = mean["ranked"][-1] - mean["ranked"][0]
    if gain <= 0:
        return [*lines, "", "- information: re-embedding gains nothing in Recall@1 here"]
    share = {key: (mean[key] - mean[key][0]) / gain for key in ("ranked", "random")}
    at = budgets.index(BUDGET_TARGET) if BUDGET_TARGET in budgets else None
    first = _first_budget(budgets, share["ranked"])
    reach = f"reaches {SHARE_TARGET:.0%} of the gain at {first:.0%}" if first else "never does"
    ok = first is not None and first <= BUDGET_TARGET
    lines += [
        "",
        f"- **{'met' if ok else 'MISSED'}**: the ranked order {reach} re-embedded"
        + (
            f" (at {BUDGET_TARGET:.0%}: {share['ranked'][at]:.0%} of the R@1 gain, random "
            f"{share['random'][at]:.0%})"
            if at is not None
            else ""
        )
        + f" (target: {SHARE_TARGET:.0%} by {BUDGET_TARGET:.0%})",
    ]
    inner = [i for i, b in enumerate(budgets) if 0 < b < 1]
    below = [pct[i] for i in inner if not mean["ranked"][i] > mean["random"][i]]
    lines.append(
        f"- **{'MISSED' if below else 'met'}**: ranked above random at every budget"
        + (f"; not at {', '.join(below)}" if below else "")
        + " (Recall@1)"
    )
    map_ranked, map_random = _mean(curves, "ranked", "mAP"), _mean(curves, "random", "mAP")
    above = sum(map_ranked[i] > map_random[i] for i in inner)
    lines += [
        f"- information (not a target): in mAP the ranked order is above random at "
        f"{above} of {len(inner)} budgets",
    ]
    return lines

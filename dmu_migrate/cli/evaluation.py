"""The evaluate command: what an upgrade buys, on held-out data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from dmu_migrate.cli.common import (
    AsJson,
    DistractorsOpt,
    DistractorsUri,
    LabelCol,
    OldCol,
    XCol,
    out,
    scores_table,
    user_errors,
)

if TYPE_CHECKING:
    from dmu_migrate.evaluation import EvalReport


def derived_table(report: EvalReport) -> Table:
    """The derived figures of method.md, one row per figure, one column per metric."""
    d = report.derived
    metrics = list(d.compatible)
    table = Table(
        title="derived figures",
        caption="compatible: new->old > old->old. ceiling gap closed: (new->evolved - "
        "old->old) / (ceiling - old->old), the ceiling being psi's form fitted on this "
        "gallery (an oracle). gain: share of the full-backfill gain (new*->new* - old->old) "
        "captured. degradation: new*->new* - new->new.",
    )
    table.add_column("figure", no_wrap=True)
    for metric in metrics:
        table.add_column(metric, justify="right")
    table.add_row(
        "compatible",
        *("yes" if d.compatible[m] else "no" for m in metrics),
    )
    if report.ceiling is not None:
        closed = report.ceiling.closed
        table.add_row(
            "ceiling gap closed",
            *("n/a" if math.isnan(closed[m]) else f"{closed[m]:.1%}" for m in metrics),
        )
    for setting, shares in d.gain_captured.items():
        table.add_row(
            f"gain {setting}",
            *("n/a" if math.isnan(shares[m]) else f"{shares[m]:.1%}" for m in metrics),
        )
    if d.degradation:
        table.add_row(
            "degradation",
            *(f"{d.degradation[m]:+.4f}" for m in metrics),
        )
    return table


def distractor_caption(report: EvalReport) -> str:
    """How many distractors each row saw: the size of the gallery its figure is judged at."""
    d = report.distractors
    if not d.get("count"):
        return f"distractors: {d.get('source', 'none')}"
    with_pool = [s for s, n in d["settings"].items() if n]
    without = [s for s, n in d["settings"].items() if not n]
    return (
        f"{d['count']:,} distractors from {d['source']} beside the gallery of "
        f"{', '.join(with_pool)}; none for {', '.join(without)} (they would need the raw "
        f"items). A distractor never counts as a hit."
    )


def calibration_line(calibrated: dict[str, Any]) -> str:
    """The offset new->mixed and the curve were scored with, and what it changed here."""
    offset = float(calibrated.get("offset", 0.0))
    if not offset:
        return "calibrated origins: offset 0 (evolved and native items scored as stored)"
    before = calibrated.get("new->mixed uncalibrated") or {}
    return (
        f"calibrated origins: evolved items score +{offset:.2f} over native ones in "
        f"new->mixed and the partial backfill (R@1 {before.get('R@1', float('nan')):.4f} "
        f"without it, as a store serving the artifact itself ranks; deploy the offset "
        f"with 'dmu-migrate calibrate')"
    )


def backfill_table(report: EvalReport) -> Table | None:
    """new->mixed per budget re-embedded, one row per order and metric, with the area."""
    if report.backfill is None:
        return None
    curves = [c for c in (report.backfill.ranked, report.backfill.random) if c is not None]
    table = Table(
        title="partial backfill: new->mixed by share of the gallery re-embedded",
        caption="ranked: the artifact's backfill_score.onnx order; random: mean of "
        "seeded random orders. AUC: area under the curve over 0-100%.",
    )
    table.add_column("order", no_wrap=True)
    for budget in curves[0].budgets:
        table.add_column(f"{budget:.0%}", justify="right")
    table.add_column("AUC", justify="right")
    for c in curves:
        for metric, values in c.figures.items():
            table.add_row(
                f"{c.order} {metric}", *(f"{v:.3f}" for v in values), f"{c.area(metric):.3f}"
            )
    return table


def evaluate(
    table: Annotated[Path, typer.Argument(help="Held-out table (Parquet).")],
    adapter: Annotated[Path, typer.Option(help="Artifact directory written by train.")],
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Full-backfill reference: an artifact of an independently trained new model. "
            "Enables 'gain captured' and 'new->new degradation'."
        ),
    ] = None,
    label_col: LabelCol = "label",
    old_col: OldCol = "old",
    x_col: XCol = "x",
    new_col: Annotated[
        str,
        typer.Option(help="Column with precomputed new-model embeddings (adapter-only artifacts)."),
    ] = "new",
    role_col: Annotated[
        str, typer.Option(help="Column marking 'query'/'gallery' rows; without it, leave-one-out.")
    ] = "role",
    mixed_fraction: Annotated[
        float,
        typer.Option(help="Share of gallery items natively new in the new->mixed setting, 0-1."),
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the mixed gallery's draw.")] = 0,
    tar: Annotated[
        bool, typer.Option(help="Compute TAR@FAR=1e-3/1e-4 over all query-gallery pairs.")
    ] = True,
    backfill_curve: Annotated[
        bool,
        typer.Option(
            help="Score new->mixed at 0-100% of the gallery re-embedded, in the artifact's "
            "ranked order and at random (partial backfill)."
        ),
    ] = True,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write a PNG bar chart (needs matplotlib) to this path, and the partial-backfill "
            "line chart beside it as NAME-backfill.png."
        ),
    ] = None,
    distractors: DistractorsOpt = "training",
    distractors_uri: DistractorsUri = None,
    ceiling: Annotated[
        bool,
        typer.Option(
            help="Score the adapter's ceiling: its form fitted on this gallery's own (old, new) "
            "pairs, an oracle no deployment has."
        ),
    ] = True,
    as_json: AsJson = False,
) -> None:
    """Score old->old, new->old, new->evolved, new->mixed and new->new retrieval.

    Example: dmu-migrate evaluate eval.parquet --adapter adapters/faces-v2
    --reference adapters/faces-v2-independent --plot report.png
    """
    with user_errors():
        # Here, not at the top: the verbs load onnxruntime and the evolve path, which --help
        # and completion never need.
        from dmu_migrate.api.build import evaluate as run_evaluation

        report = run_evaluation(
            table,
            adapter,
            reference=reference,
            label_col=label_col,
            old_col=old_col,
            x_col=x_col,
            new_col=new_col,
            role_col=role_col,
            mixed_fraction=mixed_fraction,
            seed=seed,
            tar=tar,
            backfill_curve=backfill_curve,
            plot=plot,
            distractors=distractors,
            distractors_uri=distractors_uri,
            ceiling=ceiling,
        )
        if as_json:
            out.print_json(json.dumps(report.as_dict()))
            return
        title = (
            f"{report.protocol}: {report.queries} queries, {report.gallery} gallery; "
            f"new embeddings from {report.new_source}; new->mixed = "
            f"{report.mixed_fraction:.0%} natively new"
        )
        table_out = scores_table(report, title)
        if report.ceiling is not None:
            values = report.ceiling.scores.as_dict().values()
            table_out.add_row("ceiling (oracle)", *(f"{v:.4f}" for v in values))
        table_out.caption = distractor_caption(report)
        if report.ceiling is not None:
            table_out.caption += (
                f" ceiling (oracle): psi's form ({report.ceiling.form}) fitted on this "
                f"gallery's own (old, new) pairs, which no deployment has."
            )
        out.print(table_out)
        if report.reference_scores is not None:
            ref = report.reference_scores.as_dict()
            out.print(
                "reference new*->new* (full backfill): "
                + ", ".join(f"{k} {v:.4f}" for k, v in ref.items())
            )
        else:
            out.print("no --reference: gain captured and new->new degradation need one")
        out.print(derived_table(report))
        out.print(calibration_line(report.calibration))
        curves = backfill_table(report)
        if curves is not None and report.backfill is not None:
            out.print(curves)
            out.print(report.backfill.line)
        for kind, chart in zip(("chart", "partial-backfill chart"), report.charts, strict=False):
            out.print(f"{kind}: {chart}")
        if report.transition_hint:  # before the verdict: the verdict stays the last line
            out.print(report.transition_hint)
        out.print(report.verdict.line, soft_wrap=True)  # one line, for scripts

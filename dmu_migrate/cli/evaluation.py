"""The evaluate command: what an upgrade buys, on held-out data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dmu_migrate.artifact import load_artifact
from dmu_migrate.cli.common import AsJson, LabelCol, OldCol, XCol, out, scores_table, user_errors
from dmu_migrate.data import Columns


def evaluate(
    table: Annotated[Path, typer.Argument(help="Held-out table (Parquet).")],
    adapter: Annotated[Path, typer.Option(help="Artifact directory written by train.")],
    label_col: LabelCol = "label",
    old_col: OldCol = "old",
    x_col: XCol = "x",
    role_col: Annotated[
        str, typer.Option(help="Column marking 'query'/'gallery' rows; without it, leave-one-out.")
    ] = "role",
    as_json: AsJson = False,
) -> None:
    """Score old->old, new->old, new->evolved and new->new retrieval on held-out data.

    Example: dmu-migrate evaluate eval.parquet --adapter adapters/faces-v2
    """
    with user_errors():
        from dmu_migrate.evaluation import evaluate as run_evaluation

        report = run_evaluation(
            table, load_artifact(adapter), Columns(label_col, old_col, x_col, role_col)
        )
        if as_json:
            out.print_json(json.dumps(report.as_dict()))
            return
        out.print(
            scores_table(
                report, f"{report.protocol}: {report.queries} queries, {report.gallery} gallery"
            )
        )

"""The ``dmu-migrate`` command line: options in, library call, Rich output.

Every user error is a DmuError: printed as one line on stderr, exit code by
class (see errors.py). Results go to stdout (``--json`` for scripts); progress
goes to stderr so that it never mixes with JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dmu_migrate.artifact import load_artifact
from dmu_migrate.data import Columns
from dmu_migrate.errors import DmuError, InputError

app = typer.Typer(
    help="Upgrade the embedding model behind a vector database without backfilling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

LabelCol = Annotated[str, typer.Option(help="Column with the identity / class label.")]
OldCol = Annotated[str, typer.Option(help="Column with the stored old-model embedding.")]
XCol = Annotated[str, typer.Option(help="Column with the new model's input features.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a DmuError into one line on stderr and its exit code, with no traceback."""
    try:
        yield
    except DmuError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def needs_train_extra() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(
            "this command needs torch; install the training extra: pip install 'dmu-migrate[train]'"
        ) from None


def progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def epoch_logger(bar: Progress, task: Any) -> Any:
    def on_epoch(epoch: int, entry: dict[str, float]) -> None:
        info = " ".join(f"{k}={entry[k]:.3f}" for k in ("loss", "new", "sbc", "fa"))
        bar.update(task, completed=epoch, info=info)

    return on_epoch


def scores_table(report: Any, title: str) -> Table:
    table = Table(title=title)
    table.add_column("setting")
    metrics = list(next(iter(report.scores.values())).as_dict())
    for metric in metrics:
        table.add_column(metric, justify="right")
    for setting, scores in report.scores.items():
        table.add_row(setting, *(f"{v:.4f}" for v in scores.as_dict().values()))
    return table


@app.command()
def train(
    table: Annotated[Path, typer.Argument(help="Training table (Parquet).")],
    name: Annotated[str, typer.Option(help="Artifact name; written to OUT_DIR/NAME.")],
    out_dir: Annotated[Path, typer.Option(help="Artifact registry directory.")] = Path("adapters"),
    label_col: LabelCol = "label",
    old_col: OldCol = "old",
    x_col: XCol = "x",
    from_version: Annotated[str, typer.Option(help="Version id of the old vectors.")] = "v1",
    to_version: Annotated[str, typer.Option(help="Version id of the new space.")] = "v2",
    dim: Annotated[int | None, typer.Option(help="New embedding size (default: old size).")] = None,
    hidden: Annotated[int, typer.Option(help="Hidden width of the new MLP head.")] = 256,
    adapter_hidden: Annotated[int, typer.Option(help="Hidden width of the adapter.")] = 256,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 2e-3,
    gamma: Annotated[float, typer.Option(help="Selectivity of compatibility; 0 = BCT.")] = 1.0,
    beta: Annotated[
        float, typer.Option(help="Extra adaptation weight of poor old features.")
    ] = 1.0,
    lambda_b: Annotated[float, typer.Option(help="Weight of backward compatibility.")] = 1.0,
    lambda_f: Annotated[float, typer.Option(help="Weight of forward adaptation.")] = 1.0,
    scale: float = 30.0,
    margin: float = 0.2,
    tau: Annotated[float, typer.Option(help="InfoNCE temperature.")] = 0.05,
    seed: int = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact.")] = False,
    as_json: AsJson = False,
) -> None:
    """Train the new model and the forward adapter; export ONNX and a manifest.

    Example: dmu-migrate train train.parquet --name faces-v2 --epochs 30
    """
    with user_errors():
        needs_train_extra()
        from dmu_migrate.training.trainer import TrainConfig
        from dmu_migrate.training.upgrade import train_upgrade

        config = TrainConfig(
            dim=dim,
            hidden=hidden,
            adapter_hidden=adapter_hidden,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            gamma=gamma,
            beta=beta,
            lambda_b=lambda_b,
            lambda_f=lambda_f,
            scale=scale,
            margin=margin,
            tau=tau,
            seed=seed,
        )
        with progress() as bar:
            task = bar.add_task("train", total=epochs, info="")
            report = train_upgrade(
                table,
                out_dir,
                name,
                config,
                Columns(label_col, old_col, x_col),
                from_version,
                to_version,
                overwrite,
                epoch_logger(bar, task),
            )
        m = report.artifact.manifest
        if as_json:
            out.print_json(
                json.dumps({"artifact": str(report.artifact.path), **m.__dict__}, default=str)
            )
            return
        out.print(
            f"artifact [bold]{report.artifact.path}[/] ({m.from_version} -> {m.to_version}, "
            f"{m.old_dim}-d -> {m.new_dim}-d) in {report.seconds:.1f}s"
        )
        for key, value in m.parity.items():
            out.print(f"  onnxruntime vs torch {key}: {value:.2e}")


@app.command()
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


@app.command()
def evolve(
    collection: Annotated[str, typer.Option(help="Collection or alias holding the old vectors.")],
    adapter: Annotated[Path, typer.Option(help="Artifact directory written by train.")],
    uri: Annotated[
        str, typer.Option(help="Milvus Lite file (./x.db) or server URL.")
    ] = "milvus.db",
    token: Annotated[
        str | None,
        typer.Option(
            help="Milvus token (user:password or API key).",
            envvar="DMU_MILVUS_TOKEN",
            show_default=False,
        ),
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option(
            help="Alias to point at the evolved collection (default: --collection when it "
            "is an alias)."
        ),
    ] = None,
    vector_field: Annotated[str | None, typer.Option(help="Vector field to evolve.")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per read/write batch.")] = 4096,
    threads: Annotated[int, typer.Option(help="onnxruntime threads (0 = all cores).")] = 0,
    as_json: AsJson = False,
) -> None:
    """Stream stored old vectors through the adapter into a new collection, verify, re-point.

    Example: dmu-migrate evolve --collection faces --adapter adapters/faces-v2 --uri faces.db
    """
    with user_errors():
        from dmu_migrate.evolve.pipeline import evolve as run_evolve
        from dmu_migrate.stores.base import open_store

        artifact = load_artifact(adapter)
        store = open_store(uri, token)
        try:
            with progress() as bar:
                task = bar.add_task("evolve", total=None, info="")

                def on_progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, info="rows")

                result = run_evolve(
                    store,
                    collection,
                    artifact,
                    alias,
                    vector_field,
                    batch_size,
                    threads,
                    on_progress,
                )
        finally:
            store.close()
        if as_json:
            out.print_json(json.dumps(result.as_dict()))
            return
        rate = result.rows / result.seconds if result.seconds else 0.0
        out.print(
            f"evolved {result.rows} rows '{result.source}' -> '{result.target}' "
            f"({rate:,.0f} rows/s); verified (max error {result.max_abs_error:.1e}); "
            f"alias '{result.alias}' -> '{result.target}'. "
            f"Old collection '{result.source}' is unchanged."
        )


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Scratch directory for the demo's files.")] = Path(
        "dmu-demo"
    ),
    epochs: int = 40,
    seed: int = 0,
) -> None:
    """Run the whole upgrade on real data (scikit-learn digits) in Milvus Lite.

    Example: dmu-migrate demo --workdir /tmp/dmu-demo
    """
    with user_errors():
        needs_train_extra()
        from dmu_migrate.demo import run_demo

        with progress() as bar:
            task = bar.add_task("train", total=epochs, info="")
            result = run_demo(
                workdir,
                seed,
                epochs,
                on_step=lambda msg: bar.console.print(msg),
                on_epoch=epoch_logger(bar, task),
            )
        s = result.search
        out.print(scores_table(result.evaluation, "held-out digits"))
        out.print(
            f"Milvus search with new-model queries, top-{s.k} results with the query's label: "
            f"alias '{result.evolve.alias}' (evolved) {s.evolved_hits}/{s.possible}, "
            f"old collection '{result.evolve.source}' {s.old_hits}/{s.possible}"
        )
        for label, top_evolved, top_old in s.examples:
            out.print(f"  query digit {label}: evolved top-1 {top_evolved}, old top-1 {top_old}")
        out.print(f"artifact: {result.train.artifact.path}   database: {workdir / 'gallery.db'}")


def main() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    app()

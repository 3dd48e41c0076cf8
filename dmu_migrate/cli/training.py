"""Commands that build and judge an upgrade: train, evaluate, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dmu_migrate.cli.common import (
    AsJson,
    LabelCol,
    OldCol,
    XCol,
    epoch_logger,
    needs_train_extra,
    out,
    progress,
    scores_table,
    user_errors,
)
from dmu_migrate.data import Columns


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

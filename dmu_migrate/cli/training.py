"""Commands that build and judge an upgrade: train, evaluate, demo."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

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

# TrainConfig fields that are also flags of `train`; a flag overrides --config
# only when the user typed it, so the defaults below never mask the file.
CONFIG_FLAGS = (
    "method",
    "adapter_kind",
    "discriminativeness",
    "model",
    "image_shape",
    "dim",
    "hidden",
    "adapter_hidden",
    "adapter_layers",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "gamma",
    "beta",
    "lambda_b",
    "lambda_f",
    "scale",
    "margin",
    "tau",
    "detach",
    "val_fraction",
    "patience",
    "device",
    "seed",
)


def train(
    ctx: typer.Context,
    table: Annotated[Path, typer.Argument(help="Training table (Parquet).")],
    name: Annotated[str, typer.Option(help="Artifact name; written to OUT_DIR/NAME.")],
    out_dir: Annotated[Path, typer.Option(help="Artifact registry directory.")] = Path("adapters"),
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file of training settings; flags given override it."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="dmu (selective compatibility + adapter); bct (sets gamma 0 and lambda_f 0, "
            "ships an identity adapter); independent (sets lambda_b 0: the full-backfill "
            "reference, psi trained on detached targets); adapter (fixed new model: fit psi on "
            "the NEW_COL embeddings, no new_model.onnx)."
        ),
    ] = "dmu",
    adapter_kind: Annotated[
        str, typer.Option(help="For --method adapter: mlp, procrustes or affine.")
    ] = "mlp",
    discriminativeness: Annotated[
        str,
        typer.Option(help="Old-feature quality q: probability, margin or entropy (label-free)."),
    ] = "probability",
    model: Annotated[
        str,
        typer.Option(
            help="New model: mlp (over X_COL features), cnn (X_COL holds pixels; needs "
            "--image-shape) or package.module:factory returning an nn.Module, called as "
            "factory(input_dim=..., output_dim=...)."
        ),
    ] = "mlp",
    image_shape: Annotated[
        str | None, typer.Option(help="C,H,W of the flattened pixels in X_COL, e.g. 1,28,28.")
    ] = None,
    label_col: LabelCol = "label",
    old_col: OldCol = "old",
    x_col: XCol = "x",
    new_col: Annotated[
        str, typer.Option(help="Column with precomputed new-model embeddings (--method adapter).")
    ] = "new",
    from_version: Annotated[str, typer.Option(help="Version id of the old vectors.")] = "v1",
    to_version: Annotated[str, typer.Option(help="Version id of the new space.")] = "v2",
    dim: Annotated[int | None, typer.Option(help="New embedding size (default: old size).")] = None,
    hidden: Annotated[int, typer.Option(help="Hidden width of the new MLP/CNN head.")] = 256,
    adapter_hidden: Annotated[int, typer.Option(help="Hidden width of the adapter psi.")] = 256,
    adapter_layers: Annotated[int, typer.Option(help="Hidden blocks of the adapter psi.")] = 1,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    gamma: Annotated[float, typer.Option(help="Selectivity of compatibility; 0 = BCT.")] = 1.0,
    beta: Annotated[
        float, typer.Option(help="Extra adaptation weight of poor old features.")
    ] = 1.0,
    lambda_b: Annotated[float, typer.Option(help="Weight of backward compatibility.")] = 1.0,
    lambda_f: Annotated[float, typer.Option(help="Weight of forward adaptation.")] = 1.0,
    scale: Annotated[float, typer.Option(help="Logit scale s of the cosine losses.")] = 30.0,
    margin: Annotated[float, typer.Option(help="CosFace margin of the new classifier.")] = 0.2,
    tau: Annotated[float, typer.Option(help="InfoNCE temperature.")] = 0.05,
    detach: Annotated[
        bool, typer.Option(help="Adapter targets are detached: psi cannot drag the new model.")
    ] = True,
    val_fraction: Annotated[
        float,
        typer.Option(help="Share of identities held out for early stopping (0 = train on all)."),
    ] = 0.0,
    patience: Annotated[
        int, typer.Option(help="Stop after this many epochs without validation gain; 0 = never.")
    ] = 5,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    seed: int = 0,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run from its checkpoint.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact.")] = False,
    as_json: AsJson = False,
) -> None:
    """Train the new model and the forward adapter; export ONNX and a manifest.

    Example: dmu-migrate train train.parquet --name faces-v2 --epochs 30 --val-fraction 0.2
    """
    with user_errors():
        needs_train_extra()
        from dmu_migrate.training import distributed
        from dmu_migrate.training.config import build_config, load_config_file, parse_image_shape
        from dmu_migrate.training.upgrade import train_upgrade

        given = locals()
        flags = {
            key: given[key]
            for key in CONFIG_FLAGS
            # Compared by name: typer may ship its own copy of click's enum.
            if getattr(ctx.get_parameter_source(key), "name", "DEFAULT") != "DEFAULT"
        }
        if "image_shape" in flags:
            flags["image_shape"] = parse_image_shape(flags["image_shape"])
        file_values = load_config_file(config_file) if config_file is not None else {}
        config = build_config(file_values, flags)
        # Under torchrun every rank trains, and rank 0 alone shows progress and the result.
        main = distributed.is_main()
        with progress() if main else nullcontext() as bar:
            report = train_upgrade(
                table,
                out_dir,
                name,
                config,
                Columns(label_col, old_col, x_col, new=new_col),
                from_version,
                to_version,
                overwrite,
                None if bar is None else _epoch_progress(bar, config.epochs),
                resume,
            )
        if not main:
            return
        m = report.artifact.manifest
        if as_json:
            out.print_json(
                json.dumps({"artifact": str(report.artifact.path), **m.__dict__}, default=str)
            )
            return
        ranks = m.training.get("processes", 1)
        out.print(
            f"artifact [bold]{report.artifact.path}[/] ({m.method}, {m.from_version} -> "
            f"{m.to_version}, {m.old_dim}-d -> {m.new_dim}-d) in {report.seconds:.1f}s "
            f"on {m.training['device']}" + (f" x {ranks} processes" if ranks > 1 else "")
        )
        if m.training.get("best_val") is not None:
            out.print(
                f"  kept epoch {m.training['best_epoch']}: validation mAP "
                f"{m.training['best_val']:.4f} on {m.training['validation']['identities']} "
                f"held-out identities"
            )
        for key, value in m.parity.items():
            out.print(f"  onnxruntime vs torch {key}: {value:.2e}")


def _epoch_progress(bar: Progress, epochs: int) -> Callable[[int, dict[str, float]], None]:
    """Show every loss term the method logs (they differ by method) and the validation score.

    The bar appears with the first finished epoch, so that a bad table or flag
    prints its one error line without an empty bar above it.
    """
    tasks: list[Any] = []

    def on_epoch(epoch: int, entry: dict[str, float]) -> None:
        if not tasks:
            tasks.append(bar.add_task("train", total=epochs, info=""))
        # The validation parts stay in the manifest's log; the bar shows their mean.
        shown = {k: v for k, v in entry.items() if k != "epoch" and not k.startswith("val_")}
        info = " ".join(f"{k}={v:.3f}" for k, v in shown.items())
        # Early stopping ends the run before `epochs`: the bar then shows where.
        bar.update(tasks[0], completed=epoch, info=info)

    return on_epoch


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

"""Commands that build and judge an upgrade: train, evaluate, demo."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress

from dmu_migrate.cli.common import (
    AsJson,
    DistractorsOpt,
    DistractorsUri,
    LabelCol,
    OldCol,
    XCol,
    epoch_logger,
    needs_train_extra,
    out,
    progress,
    say,
    scores_table,
    user_errors,
)
from dmu_migrate.cli.settings import typed, with_settings
from dmu_migrate.quality import transition_hint, validated_where, verdict
from dmu_migrate.training.config import TrainConfig

if TYPE_CHECKING:
    from dmu_migrate.demo import DemoResult  # imports torch: only for the annotation

# Not a TrainConfig field: it changes speed, not the result, so --resume accepts any value.
TorchThreads = Annotated[
    int,
    typer.Option(
        "--threads",
        help="CPU threads of torch, >= 0; 0 = the cores other work leaves idle, capped for "
        "small models (OMP_NUM_THREADS, if set, is kept).",
    ),
]


@with_settings(TrainConfig)
def train(
    ctx: typer.Context,
    table: Annotated[Path, typer.Argument(help="Training table (Parquet).")],
    name: Annotated[str, typer.Option(help="Artifact name; written to OUT_DIR/NAME.")],
    out_dir: Annotated[Path, typer.Option(help="Artifact registry directory.")] = Path("adapters"),
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file of training settings; flags given override it."),
    ] = None,
    label_col: LabelCol = "label",
    old_col: OldCol = "old",
    x_col: XCol = "x",
    new_col: Annotated[
        str, typer.Option(help="Column with precomputed new-model embeddings (--method adapter).")
    ] = "new",
    from_version: Annotated[str, typer.Option(help="Version id of the old vectors.")] = "v1",
    to_version: Annotated[str, typer.Option(help="Version id of the new space.")] = "v2",
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run from its checkpoint.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact.")] = False,
    tune: Annotated[
        int,
        typer.Option(
            help="Optuna trials on the held-out identities, >= 0 (0 = train once with the settings)."
        ),
    ] = 0,
    threads: TorchThreads = 0,
    distractors: DistractorsOpt = "training",
    distractors_uri: DistractorsUri = None,
    *,
    as_json: AsJson = False,
    **settings: Any,
) -> None:
    """Train the new model and the forward adapter; export ONNX and a manifest.

    Example: dmu-migrate train train.parquet --name faces-v2 --method dmu
    """
    with user_errors():
        needs_train_extra()
        # Here, not at the top: it imports torch (the train extra), checked just above.
        from dmu_migrate.api.build import train as run_train
        from dmu_migrate.api.build import train_config
        from dmu_migrate.training import distributed

        flags = typed(ctx, settings)
        # Under torchrun every rank trains, and rank 0 alone shows progress and the result.
        main = distributed.is_main()
        epochs = train_config(config_file, **flags).epochs  # the bar's length
        with progress() if main else nullcontext() as bar:
            report = run_train(
                table,
                name,
                out_dir=out_dir,
                config_file=config_file,
                label_col=label_col,
                old_col=old_col,
                x_col=x_col,
                new_col=new_col,
                from_version=from_version,
                to_version=to_version,
                resume=resume,
                overwrite=overwrite,
                tune=tune,
                threads=threads,
                on_epoch=None if bar is None else _epoch_progress(bar, epochs),
                distractors=distractors,
                distractors_uri=distractors_uri,
                **flags,
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
            f"artifact {report.artifact.path} ({m.method}, {m.from_version} -> "
            f"{m.to_version}, {m.old_dim}-d -> {m.new_dim}-d) in {report.seconds:.1f}s "
            f"on {m.training['device']}" + (f" x {ranks} processes" if ranks > 1 else "")
        )
        if m.training.get("best_val") is not None:
            validation = m.training["validation"]
            out.print(
                f"  kept epoch {m.training['best_epoch']}: validation mAP "
                f"{m.training['best_val']:.4f} on {validation['identities']} held-out "
                f"{validation.get('held_out', 'identities')}"
            )
        if m.quality:
            pool = m.quality.get("distractors") or {}
            if pool:
                out.print(f"  {gate_size(pool)}")
            out.print("  " + m.quality["verdict"], soft_wrap=True)
            offset = m.calibration.get("offset")
            if offset is not None:
                out.print(
                    f"  calibrated origins: evolved items score +{offset:.2f} over native "
                    f"ones in a mixed gallery (fitted on the held-out identities)"
                )
            hint = transition_hint(m.quality, str(report.artifact.path))
            if hint and m.quality["verdict"].startswith("do not deploy"):
                out.print("  " + hint)
        for key, value in m.parity.items():
            out.print(f"  onnxruntime vs torch {key}: {value:.2e}")


def gate_size(pool: dict[str, Any]) -> str:
    """How many distractors each figure of the gate saw, in one line."""
    per = pool.get("settings", {})
    saw = ", ".join(f"{s} {n:,}" for s, n in per.items())
    return f"distractors from {pool.get('source')}: {saw} ({pool.get('note')})"


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
    epochs: Annotated[int, typer.Option(help="Most training epochs of the new model (> 0).")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the data split and the training.")] = 0,
    threads: TorchThreads = 0,
    as_json: AsJson = False,
) -> None:
    """Run the whole upgrade on real data (scikit-learn digits) in Milvus Lite.

    Example: dmu-migrate demo --workdir /tmp/dmu-demo
    """
    with user_errors():
        needs_train_extra()
        # Here, not at the top: it imports torch (the train extra), checked just above.
        from dmu_migrate.demo import run_demo

        with progress() as bar:
            task = bar.add_task("train", total=epochs, info="")
            result = run_demo(
                workdir,
                seed,
                epochs,
                on_step=say,
                on_epoch=epoch_logger(bar, task),
                threads=threads,
            )
        if as_json:
            out.print_json(json.dumps(result.as_dict(), default=str))
            return
        show_demo(result)


def show_demo(result: DemoResult) -> None:
    """The demo's figures as a person reads them: the report, its verdict, the searches."""
    s = result.search
    out.print(scores_table(result.evaluation, "held-out digits"))
    out.print(result.evaluation.verdict.line, soft_wrap=True)
    out.print(
        f"Milvus search with new-model queries, top-{s.k} results with the query's label: "
        f"alias '{result.evolve.alias}' (evolved) {s.evolved_hits}/{s.possible}, "
        f"old collection '{result.evolve.source}' {s.old_hits}/{s.possible}"
    )
    for label, top_evolved, top_old in s.examples:
        out.print(f"  query digit {label}: evolved top-1 {top_evolved}, old top-1 {top_old}")
    out.print(f"artifact: {result.train.artifact.path}   database: {result.database}")


def calibrate(
    adapter: Annotated[Path, typer.Option(help="Artifact directory written by train.")],
    metric: Annotated[
        str,
        typer.Option(help="Metric of the collection it deploys to: cosine, ip or l2."),
    ] = "cosine",
    out_dir: Annotated[
        Path | None, typer.Option(help="Where to write it (default: beside the artifact).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact.")] = False,
    as_json: AsJson = False,
) -> None:
    """Derive <name>-calibrated (v1 -> v2_cal): the fitted offset of evolved items stored
    as one extra dimension, for a gallery that mixes evolved and native items.

    evolve with it stores [psi(o) ; k]; backfill and the application's inserts store
    its item_model.onnx output [f ; 0]; queries use its new_model.onnx, [q ; 1]. One
    search then scores an evolved item the fitted offset above a native one of the
    same cosine (docs/method.md, "Calibrated origins").

    Example: dmu-migrate calibrate --adapter adapters/faces-v2
    """
    with user_errors():
        needs_train_extra()
        from dmu_migrate.training.calibrated import make_calibrated

        made = make_calibrated(adapter, out_dir, metric, overwrite)
        m = made.manifest
        if as_json:
            out.print_json(json.dumps({"path": str(made.path), **m.__dict__}, default=str))
            return
        out.print(
            f"calibrated: {made.path} ({m.from_version} -> {m.to_version}, {m.old_dim}-d -> "
            f"{m.new_dim}-d, {metric})",
            soft_wrap=True,
        )
        out.print(
            f"  evolved rows [psi(o) ; {m.training['stored_constant']:.4f}] (adapter.onnx), "
            f"native rows [f ; 0] (item_model.onnx), queries [q ; 1] (new_model.onnx): "
            f"evolved items score +{m.training['offset']:.2f}"
        )


def transition(
    adapter: Annotated[Path, typer.Option(help="Artifact directory written by train.")],
    out_dir: Annotated[
        Path | None, typer.Option(help="Where to write them (default: beside the artifact).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing artifacts.")] = False,
    as_json: AsJson = False,
) -> None:
    """Derive the transition artifacts: <name>-transition (v1 -> v2_fused) and <name>-exit.

    While the old encoder still runs at query time, evolve with <name>-transition
    stores [o ; psi(o)] and queries [a q_old ; b q_new] (its new_model.onnx takes
    both embeddings side by side); evolve with <name>-exit later keeps psi(o) only.

    Example: dmu-migrate transition --adapter adapters/faces-v2
    """
    with user_errors():
        needs_train_extra()
        # Here, not at the top: it imports torch (the train extra), checked just above.
        from dmu_migrate.training.transition import make_transition

        made = make_transition(adapter, out_dir, overwrite)
        rows = {"transition": made.transition, "exit": made.exit}
        if as_json:
            out.print_json(
                json.dumps(
                    {k: {"path": str(a.path), **a.manifest.__dict__} for k, a in rows.items()},
                    default=str,
                )
            )
            return
        fusion = made.transition.manifest.training["fusion"]
        for kind, artifact in rows.items():
            m = artifact.manifest
            out.print(
                f"{kind}: {artifact.path} ({m.from_version} -> {m.to_version}, {m.old_dim}-d -> {m.new_dim}-d)",
            )
        out.print(
            f"query = [{fusion['a']:.2f} q_old ; {fusion['b']:.2f} q_new]: validated R@1 "
            f"{100 * fusion['R@1']:.1f}",
        )
        m = made.transition.manifest
        where = validated_where(m.quality, m.name)
        out.print("  " + verdict(made.transition.validated, where).line, soft_wrap=True)

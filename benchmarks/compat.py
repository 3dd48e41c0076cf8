"""Every upgrade method on three examples, several seeds: the compatibility benchmark.

Every example is trained with the default TrainConfig (fashion_mnist names its
plug-in architecture, nothing else): the defaults must work on data nobody tuned
them for. For each example (WordNet text upgrade, Fashion-MNIST 30% -> 100%, CJK
glyphs 30% -> 100% of the training ideographs) and seed:
1. ``independent``: the new model trained alone; its new->new is the
   full-backfill reference M(new*->new*) of every other run.
2. ``bct``, ``dmu`` and the DMU ablations (joint training: psi, a residual
   mlp, trained in the new model's loop instead of fitted to the kept model;
   gamma=0, beta=0, lambda_b=0).
3. Post-hoc adapters (procrustes, affine, mlp) fitted old -> the independent
   model's embeddings, the best a team can do without training compatibility.
Every artifact is scored by ``dmu_migrate.evaluation.evaluate`` on the
held-out table, and each row keeps the artifact's manifest quality (the figures
validated at training) so that the report can set the gate's verdict against
the test table's; ``report.py`` turns the raw JSON into docs/results.md.

    python benchmarks/compat.py                 # test split, seeds 0 1 2, docs/results.md
    python benchmarks/compat.py --split val     # the tuning split
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmu_migrate.artifact import Artifact, load_artifact
from dmu_migrate.evaluation import evaluate
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.training.config import TrainConfig
from dmu_migrate.training.upgrade import train_upgrade

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Example:
    name: str
    directory: Path  # holds prepare.py and nets.py
    train: dict[str, Any]  # TrainConfig fields shared by every method on this example
    prepare_args: dict[str, Any] = field(default_factory=dict)


# Training uses the defaults of TrainConfig on every example; only the data sizes
# are set here (prepare_args). fashion_mnist's model is its plug-in CNN, which is
# the example's architecture, not a tuning choice.
EXAMPLES = {
    "wordnet_text": Example(
        "wordnet_text",
        ROOT / "examples" / "wordnet_text",
        {},
        {"train": 2500, "val": 1000, "test": 2000},
    ),
    "fashion_mnist": Example(
        "fashion_mnist",
        ROOT / "examples" / "fashion_mnist",
        {"model": "nets:cnn"},
        {"train_size": 10000, "val_size": 5000},
    ),
    "glyphs": Example("glyphs", ROOT / "examples" / "glyphs", {}, {"identities": 2500}),
}

# Method label -> TrainConfig fields. Adapters are fitted to the independent model.
TRAINED: dict[str, dict[str, Any]] = {
    "independent": {"method": "independent"},
    "bct": {"method": "bct"},
    "dmu": {"method": "dmu"},
    "dmu joint": {"method": "dmu", "joint": True},  # psi trained in the new model's loop
    "dmu gamma=0": {"method": "dmu", "gamma": 0.0},
    "dmu beta=0": {"method": "dmu", "beta": 0.0},
    "dmu lambda_b=0": {"method": "dmu", "lambda_b": 0.0},
}
ADAPTERS: dict[str, dict[str, Any]] = {
    "adapter procrustes": {"method": "adapter", "adapter_kind": "procrustes"},
    "adapter affine": {"method": "adapter", "adapter_kind": "affine"},
    "adapter mlp": {"method": "adapter", "adapter_kind": "mlp"},
}
METHODS = [*TRAINED, *ADAPTERS]
CORE = ("independent", "bct", "dmu", *ADAPTERS)  # every seed; the ablations may run on fewer


def load_module(example: Example, name: str) -> Any:
    """Import examples/<example>/<name>.py (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"{example.name}_{name}", example.directory / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def tables(example: Example, data: Path) -> dict[str, Path]:
    """The example's Parquet tables, built by its prepare.py when missing."""
    out = data / example.name
    paths = {name: out / f"{name}.parquet" for name in ("train", "val", "eval")}
    if not all(p.exists() for p in paths.values()):
        load_module(example, "prepare").prepare(out, **example.prepare_args)
    return paths


def with_new(table: Path, encoder: Artifact, target: Path) -> Path:
    """``table`` plus column ``new`` = the independent model's embeddings of ``x``."""
    assert encoder.new_model_path is not None
    raw = pq.read_table(table)
    x = np.asarray(raw.column("x").combine_chunks().flatten(), np.float32).reshape(raw.num_rows, -1)
    new = OnnxModel(encoder.new_model_path)(x)
    column = pa.FixedSizeListArray.from_arrays(pa.array(new.ravel()), new.shape[1])
    if "new" in raw.column_names:
        raw = raw.drop_columns(["new"])
    pq.write_table(raw.append_column("new", column), target)
    return target


@contextlib.contextmanager
def plugins(example: Example) -> Iterator[None]:
    """Make ``--model nets:...`` import this example's nets.py while the block runs."""
    sys.path.insert(0, str(example.directory))
    sys.modules.pop("nets", None)  # each example has its own nets.py
    try:
        yield
    finally:
        sys.path.remove(str(example.directory))
        sys.modules.pop("nets", None)


def artifact_name(label: str) -> str:
    """'dmu lambda_b=0' -> 'dmu_lambda_b0': a label as an artifact directory name."""
    return label.replace(" ", "_").replace("=", "").replace(":", "_")


def search_cost(table: Path, artifact: Artifact, reps: int = 5) -> dict[str, float]:
    """What the transition mode costs at query time: exact search of every query over
    the test gallery, evolved (d_new wide) against fused (d_old + d_new), median of reps."""
    from dmu_migrate.data import read_table
    from dmu_migrate.training.transition import fuse_gallery, fuse_query

    if artifact.new_model_path is None:
        return {}
    t = read_table(table)
    query, gallery = t.role == "query", t.role == "gallery"
    new = OnnxModel(artifact.new_model_path)(t.x)
    evolved = OnnxModel(artifact.adapter_path)(t.old)
    fusion = artifact.manifest.quality.get("fusion", {"a": 0.5, "b": 0.5})
    pairs = {
        "evolved": (new[query], evolved[gallery]),
        "fused": (
            fuse_query(t.old[query], new[query], fusion["a"], fusion["b"]),
            fuse_gallery(t.old[gallery], evolved[gallery]),
        ),
    }
    out: dict[str, float] = {}
    for name, (q, g) in pairs.items():
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            (q @ g.T).argmax(axis=1)
            times.append(time.perf_counter() - start)
        out[f"{name}_seconds"] = float(np.median(times))
        out[f"{name}_dim"] = int(g.shape[1])
    return out


def run_example(
    example: Example,
    data: Path,
    work: Path,
    seeds: list[int],
    split: str,
    methods: list[str],
    log: Callable[[str], None],
    reuse: bool = False,
) -> list[dict[str, Any]]:
    paths = tables(example, data)
    with plugins(example):
        return _run_seeds(example, paths, work, seeds, split, methods, log, reuse)


def reusable(path: Path, config: TrainConfig) -> Artifact | None:
    """The artifact at ``path`` when it was trained with exactly ``config``, else None."""
    if not (path / "manifest.json").exists():
        return None
    artifact = load_artifact(path)
    recorded = artifact.manifest.training.get("config", {})
    wanted = json.loads(json.dumps(config.resolved().as_dict()))  # tuples as lists
    return artifact if recorded == wanted else None


def _run_seeds(
    example: Example,
    paths: dict[str, Path],
    work: Path,
    seeds: list[int],
    split: str,
    methods: list[str],
    log: Callable[[str], None],
    reuse: bool = False,
) -> list[dict[str, Any]]:
    rows = []
    seconds: dict[str, float | None]
    for seed in seeds:
        out = work / example.name / f"seed{seed}"
        out.mkdir(parents=True, exist_ok=True)
        artifacts: dict[str, Artifact] = {}
        seconds = {}
        for label in methods:
            fields = {**example.train, **(TRAINED | ADAPTERS)[label], "seed": seed}
            table = paths["train"]
            if label in ADAPTERS:
                table = with_new(
                    paths["train"], artifacts["independent"], out / "train_new.parquet"
                )
            config = TrainConfig(**fields)
            kept = reusable(out / artifact_name(label), config) if reuse else None
            if kept is not None:
                artifacts[label], seconds[label] = kept, None
                log(f"{example.name} seed {seed} {label}: reused {kept.path}")
                continue
            start = time.perf_counter()
            trained = train_upgrade(table, out, artifact_name(label), config, overwrite=True)
            seconds[label] = time.perf_counter() - start
            artifacts[label] = trained.artifact
            log(f"{example.name} seed {seed} {label}: trained in {seconds[label]:.0f}s")
        reference = artifacts["independent"]
        eval_table = paths[split]
        eval_new = with_new(eval_table, reference, out / f"{split}_new.parquet")
        for label in methods:
            artifact = artifacts[label]
            # Adapter artifacts read the independent model's embeddings from column 'new'.
            table = eval_new if artifact.new_model_path is None else eval_table
            report = evaluate(table, artifact, reference=reference, seed=seed)
            cost = search_cost(table, artifact) if label == "dmu" else None
            rows.append(
                {
                    "example": example.name,
                    "seed": seed,
                    "method": label,
                    "train_seconds": seconds[label],
                    "config": artifact.manifest.training.get("config", {}),
                    # What train validated on held-out identities: the gate's figures.
                    "quality": artifact.manifest.quality or {},
                    **({"search_cost": cost} if cost else {}),
                    **report.as_dict(),
                }
            )
            r1 = {k: round(v.recall[1], 4) for k, v in report.scores.items()}
            log(f"{example.name} seed {seed} {label}: R@1 {r1}")
    return rows


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set epochs=2 model=mlp`` -> {"epochs": 2, "model": "mlp"} (JSON values, else text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=list(EXAMPLES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument(
        "--split",
        default="eval",
        choices=["eval", "val"],
        help="eval = held-out test identities; val = the tuning split",
    )
    parser.add_argument(
        "--data", type=Path, default=ROOT / "data", help="Where prepared tables live."
    )
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "benchmark", help="Artifacts.")
    parser.add_argument("--raw", type=Path, default=None, help="Raw JSON results path.")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="Override a TrainConfig field on every example (tuning).",
    )
    parser.add_argument(
        "--ablation-seeds",
        nargs="+",
        type=int,
        default=None,
        help="Seeds that also run the DMU ablations (default: every seed).",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Evaluate artifacts already in --work that were trained with this run's exact "
        "config instead of training them again (their training time is then not measured).",
    )
    args = parser.parse_args()
    if "independent" not in args.methods:
        args.methods.insert(0, "independent")  # the reference of every other method
    overrides = parse_set(args.set)

    raw = args.raw or ROOT / "benchmarks" / "results" / f"compat_{args.split}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    core = [m for m in args.methods if m in CORE]
    for name in args.examples:
        example = EXAMPLES[name]
        example = Example(
            example.name, example.directory, {**example.train, **overrides}, example.prepare_args
        )
        for seed in args.seeds:
            # Ablations cost as much as the methods themselves: --ablation-seeds
            # runs them on fewer seeds when the machine's time is short.
            ablate = args.ablation_seeds is None or seed in args.ablation_seeds
            rows += run_example(
                example,
                args.data,
                args.work,
                [seed],
                args.split,
                args.methods if ablate else core,
                lambda msg: print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True),
                args.reuse,
            )
            # Written after every seed, so a run stopped early keeps what it finished.
            payload = {
                "argv": sys.argv[1:],
                "seconds": time.perf_counter() - start,
                "examples": {n: EXAMPLES[n].train | overrides for n in args.examples},
                "prepare": {n: EXAMPLES[n].prepare_args for n in args.examples},
                "rows": rows,
            }
            raw.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"raw results: {raw} ({time.perf_counter() - start:.0f}s)")


if __name__ == "__main__":
    main()

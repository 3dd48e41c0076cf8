"""Every upgrade method on both examples, several seeds: the compatibility benchmark.

For each example (WordNet text upgrade, Fashion-MNIST 30% -> 100%) and seed:
1. ``independent``: the new model trained alone; its new->new is the
   full-backfill reference M(new*->new*) of every other run.
2. ``bct``, ``dmu`` and the DMU ablations (gamma=0, lambda_f=0, beta=0).
3. Post-hoc adapters (procrustes, affine, mlp) fitted old -> the independent
   model's embeddings, the best a team can do without training compatibility.
Every artifact is scored by ``dmu_migrate.evaluation.evaluate`` on the
held-out table; ``report.py`` turns the raw JSON into docs/results.md.

    python benchmarks/compat.py                 # test split, seeds 0 1 2, docs/results.md
    python benchmarks/compat.py --split val     # the tuning split (what settings were chosen on)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmu_migrate.artifact import Artifact
from dmu_migrate.evaluation import evaluate
from dmu_migrate.evolve.transform import OnnxModel
from dmu_migrate.training.config import TrainConfig
from dmu_migrate.training.upgrade import train_upgrade

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Example:
    name: str
    directory: Path  # holds prepare.py and nets.py
    train: dict[str, Any]  # TrainConfig fields shared by every method on this example
    prepare_args: dict[str, Any] = field(default_factory=dict)


# Sizes and epochs are capped so that the whole benchmark (2 examples x 3 seeds
# x 9 methods) runs in about half an hour on two CPU cores; see docs/results.md.
EXAMPLES = {
    "wordnet_text": Example(
        "wordnet_text",
        ROOT / "examples" / "wordnet_text",
        # lambda_f, tau and adapter_layers were chosen on the val split (docs/results.md).
        {
            "model": "nets:residual",
            "epochs": 10,
            "batch_size": 256,
            "lr": 1e-3,
            "lambda_f": 3.0,
            "tau": 0.1,
            "adapter_layers": 2,
        },
        {"train": 2500, "val": 1000, "test": 2000},
    ),
    "fashion_mnist": Example(
        "fashion_mnist",
        ROOT / "examples" / "fashion_mnist",
        {"model": "nets:cnn", "epochs": 5, "batch_size": 256, "lr": 3e-3},
        {"train_size": 20000, "val_size": 5000},
    ),
}

# Method label -> TrainConfig fields. Adapters are fitted to the independent model.
TRAINED = {
    "independent": {"method": "independent"},
    "bct": {"method": "bct"},
    "dmu": {"method": "dmu"},
    "dmu gamma=0": {"method": "dmu", "gamma": 0.0},
    "dmu lambda_f=0": {"method": "dmu", "lambda_f": 0.0},
    "dmu beta=0": {"method": "dmu", "beta": 0.0},
}
ADAPTERS = {
    "adapter procrustes": {"method": "adapter", "adapter_kind": "procrustes"},
    "adapter affine": {"method": "adapter", "adapter_kind": "affine"},
    "adapter mlp": {"method": "adapter", "adapter_kind": "mlp"},
}
METHODS = [*TRAINED, *ADAPTERS]


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


def run_example(
    example: Example,
    data: Path,
    work: Path,
    seeds: list[int],
    split: str,
    methods: list[str],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    paths = tables(example, data)
    sys.path.insert(0, str(example.directory))  # so that --model nets:... imports
    sys.modules.pop("nets", None)  # each example has its own nets.py
    rows = []
    for seed in seeds:
        out = work / example.name / f"seed{seed}"
        out.mkdir(parents=True, exist_ok=True)
        artifacts: dict[str, Artifact] = {}
        seconds: dict[str, float] = {}
        for label in methods:
            fields = {**example.train, **(TRAINED | ADAPTERS)[label], "seed": seed}
            table = paths["train"]
            if label in ADAPTERS:
                table = with_new(
                    paths["train"], artifacts["independent"], out / "train_new.parquet"
                )
            start = time.perf_counter()
            report = train_upgrade(
                table,
                out,
                label.replace(" ", "_").replace("=", ""),
                TrainConfig(**fields),
                overwrite=True,
            )
            seconds[label] = time.perf_counter() - start
            artifacts[label] = report.artifact
            log(f"{example.name} seed {seed} {label}: trained in {seconds[label]:.0f}s")
        reference = artifacts["independent"]
        eval_table = paths[split]
        eval_new = with_new(eval_table, reference, out / f"{split}_new.parquet")
        for label in methods:
            artifact = artifacts[label]
            # Adapter artifacts read the independent model's embeddings from column 'new'.
            table = eval_new if artifact.new_model_path is None else eval_table
            report = evaluate(table, artifact, reference=reference, seed=seed)
            rows.append(
                {
                    "example": example.name,
                    "seed": seed,
                    "method": label,
                    "train_seconds": seconds[label],
                    "config": artifact.manifest.training.get("config", {}),
                    **report.as_dict(),
                }
            )
            r1 = {k: round(v.recall[1], 4) for k, v in report.scores.items()}
            log(f"{example.name} seed {seed} {label}: R@1 {r1}")
    sys.path.remove(str(example.directory))
    return rows


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
    args = parser.parse_args()
    if "independent" not in args.methods:
        args.methods.insert(0, "independent")  # the reference of every other method
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}

    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in args.examples:
        example = EXAMPLES[name]
        example = Example(
            example.name, example.directory, {**example.train, **overrides}, example.prepare_args
        )
        rows += run_example(
            example,
            args.data,
            args.work,
            args.seeds,
            args.split,
            args.methods,
            lambda msg: print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True),
        )
    raw = args.raw or ROOT / "benchmarks" / "results" / f"compat_{args.split}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "argv": sys.argv[1:],
        "seconds": time.perf_counter() - start,
        "examples": {n: EXAMPLES[n].train | overrides for n in args.examples},
        "prepare": {n: EXAMPLES[n].prepare_args for n in args.examples},
        "rows": rows,
    }
    raw.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"raw results: {raw} ({payload['seconds']:.0f}s)")


if __name__ == "__main__":
    main()

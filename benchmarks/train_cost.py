"""Training cost: wall time and peak memory of ``dmu-migrate train`` on the two examples.

For each example (examples/fashion_mnist, examples/wordnet_text) this prepares
the data the way the example's run.sh does (its prepare.py with run.sh's size
flags), then runs the example's ``--method dmu`` training exactly as run.sh
invokes it, as a child process. Wall time is measured around the child; peak
memory is the child's peak resident set size, ``ru_maxrss`` of ``os.wait4``
(kB on Linux). The prepare step is timed the same way, for context only.

``--quick`` caps the data (fewer training images / synsets, smaller val and
test splits) for a fast check; the epochs and every training flag stay those
of run.sh, and the output says which data sizes ran.

    python benchmarks/train_cost.py           # run.sh sizes: results/train_cost.json + docs section
    python benchmarks/train_cost.py --quick --no-write   # a quick check, writes nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from markdown import publish

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "train_cost.json"
BIN = Path(sys.executable).parent  # dmu-migrate from the same environment as this script


@dataclass(frozen=True)
class Example:
    name: str
    artifact: str  # --name of the dmu run in run.sh
    prepare: list[str]  # prepare.py flags as run.sh passes them
    quick: list[str]  # prepare.py flags of --quick
    common: list[str]  # run.sh's COMMON flags, less --out-dir and --overwrite


# Copied from each run.sh; check_run_sh() fails if run.sh no longer says the same.
EXAMPLES = [
    Example(
        "fashion_mnist",
        "fmnist-dmu",
        ["--train-size", "20000"],
        ["--train-size", "4000", "--val-size", "1000"],
        ["--model", "nets:cnn", "--epochs", "5", "--lr", "3e-3"],
    ),
    Example(
        "wordnet_text",
        "wordnet-dmu",
        ["--train-synsets", "2500"],
        ["--train-synsets", "500", "--val-synsets", "200", "--test-synsets", "200"],
        [
            "--model",
            "nets:residual",
            "--epochs",
            "10",
            "--lr",
            "1e-3",
            "--lambda-f",
            "3",
            "--tau",
            "0.1",
            "--adapter-layers",
            "2",
        ],
    ),
]


def check_run_sh(example: Example) -> None:
    """Refuse to measure a command that run.sh no longer runs."""
    text = (ROOT / "examples" / example.name / "run.sh").read_text()
    wanted = [
        " ".join(example.prepare),
        " ".join(example.common),
        f"--name {example.artifact} --method dmu",
    ]
    flat = " ".join(text.replace("\\\n", " ").split())
    missing = [w for w in wanted if w not in flat]
    if missing:
        raise SystemExit(
            f"examples/{example.name}/run.sh no longer has: {missing}; update EXAMPLES"
        )


def run_child(argv: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run one command; return its wall time and peak RSS (its own, from wait4)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        # wait4 gives the rusage of this child alone, unlike getrusage(RUSAGE_CHILDREN),
        # which is the maximum over every child this process has waited for.
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"{shlex.join(argv)} failed ({child.returncode}):\n{tail}")
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in kB on Linux
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
    }


def commands(example: Example, data: Path, out: Path, quick: bool) -> tuple[list[str], list[str]]:
    """(prepare, train) argv, as run.sh spells them with DATA=data and OUT=out."""
    prepare = [
        str(BIN / "python"),
        f"examples/{example.name}/prepare.py",
        "--out",
        str(data),
        *(example.quick if quick else example.prepare),
    ]
    train = [
        str(BIN / "dmu-migrate"),
        "train",
        str(data / "train.parquet"),
        "--name",
        example.artifact,
        "--method",
        "dmu",
        *example.common,
        "--out-dir",
        str(out),
        "--overwrite",
    ]
    return prepare, train


def measure(example: Example, data_root: Path, quick: bool) -> dict[str, Any]:
    check_run_sh(example)
    data = data_root / (example.name + ("-quick" if quick else ""))
    env = dict(os.environ)
    # run.sh puts the example on PYTHONPATH so that --model nets:... imports.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (f"examples/{example.name}", env.get("PYTHONPATH", "")) if p
    )
    with tempfile.TemporaryDirectory() as tmp:
        prepare, train = commands(example, data, Path(tmp) / "adapters", quick)
        load_before = os.getloadavg()[0]
        prep = run_child(prepare, env, Path(tmp) / "prepare.log")
        print(f"{example.name}: prepare {prep}", flush=True)
        cost = run_child(train, env, Path(tmp) / "train.log")
        print(f"{example.name}: train {cost}", flush=True)
        load_after = os.getloadavg()[0]
    # Paths as run.sh would show them: the temporary OUT as <tmp>, the rest repo-relative.
    shown = [
        shlex.join(cmd)
        .replace(str(BIN) + "/", "")
        .replace(tmp, "<tmp>")
        .replace(str(ROOT) + "/", "")
        for cmd in (prepare, train)
    ]
    return {
        "example": example.name,
        "quick": quick,
        "prepare_command": shown[0],
        "train_command": shown[1],
        "train_rows": pq.read_metadata(data / "train.parquet").num_rows,
        "epochs": int(example.common[example.common.index("--epochs") + 1]),
        "prepare": prep,
        "train": cost,
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
    }


def cpu_model() -> str:
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def markdown(report: dict[str, Any]) -> str:
    rows = report["results"]
    lines = [
        "## Training cost: `dmu-migrate train` on the examples",
        "",
        f"Machine: {report['cpu']}, {report['cores']} cores. Date: {report['date']}. "
        f"Reproduce: `{report['command']}` (raw numbers in `benchmarks/results/train_cost.json`).",
        "",
        "Each example's `--method dmu` run, as its run.sh invokes it (with `DATA` and `OUT` "
        "set to the paths shown), in a child process: wall time around the child, peak RSS = "
        "the child's `ru_maxrss` from `os.wait4`. The data were prepared first with the "
        "prepare command shown ("
        + ("`--quick`: capped sizes" if report["quick"] else "run.sh's sizes")
        + ").",
        "",
        "| example | command | data size (train rows) | epochs | wall s | CPU s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r["train"]
        lines.append(
            f"| {r['example']} | `{r['train_command']}` | {r['train_rows']:,} | {r['epochs']} "
            f"| {t['wall_s']} | {t['cpu_s']} | {t['peak_rss_mb']} |"
        )
    lines += ["", "Data preparation, for context (not part of `train`):", ""]
    lines += ["| example | command | wall s | peak RSS MB |", "|---|---|---:|---:|"]
    for r in rows:
        p = r["prepare"]
        lines.append(
            f"| {r['example']} | `{r['prepare_command']}` | {p['wall_s']} | {p['peak_rss_mb']} |"
        )
    loads = ", ".join(
        f"{r['example']} {r['load_avg_1min'][0]} -> {r['load_avg_1min'][1]}" for r in rows
    )
    lines += [
        "",
        f"The machine was shared with other work during the run; 1-minute load average "
        f"before -> after each example: {loads}. Training uses torch's default thread count "
        f"({report['cores']} here).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Cap the data sizes (see above).")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "train_cost")
    parser.add_argument("--only", choices=[e.name for e in EXAMPLES], help="One example only.")
    parser.add_argument("--no-write", action="store_true", help="Print only; write nothing.")
    args = parser.parse_args()

    examples = [e for e in EXAMPLES if args.only in (None, e.name)]
    results = [measure(e, args.data_dir, args.quick) for e in examples]
    flags = " --quick" if args.quick else ""
    report = {
        "date": datetime.date.today().isoformat(),
        "command": f"python benchmarks/train_cost.py{flags}",
        "quick": args.quick,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "results": results,
    }
    print(json.dumps(results, indent=2))
    if not args.no_write:
        publish(RESULTS, report, "training", markdown(report))


if __name__ == "__main__":
    main()

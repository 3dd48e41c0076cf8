"""Turn the raw benchmark JSON into docs/results.md and the PNG charts in docs/.

    python benchmarks/report.py benchmarks/results/compat_eval.json

Every number on the page is computed here from the raw rows: mean +- std over
seeds per example, method and setting, then the four targets of the issue,
each marked met or missed with the margin.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("old->old", "new->old", "new->evolved", "new->mixed", "new->new")
ADAPTERS = ("adapter procrustes", "adapter affine", "adapter mlp")
TITLES = {
    "wordnet_text": "WordNet: paraphrase-MiniLM-L3-v2 -> all-MiniLM-L6-v2 (+ trained head)",
    "fashion_mnist": "Fashion-MNIST: CNN on 30% of the training data -> CNN on 100%",
}


def collect(
    rows: list[dict[str, Any]], example: str, metric: str
) -> dict[str, dict[str, list[float]]]:
    """method -> setting -> per-seed values (plus 'backfill': the reference new*->new*)."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["example"] != example:
            continue
        per = out.setdefault(row["method"], {})
        for setting, values in row["settings"].items():
            per.setdefault(setting, []).append(values[metric])
        per.setdefault("backfill", []).append(row["reference_new_new"][metric])
    return out


def mean(values: list[float]) -> float:
    return float(np.mean(values))


def cell(values: list[float], scale: float = 100.0) -> str:
    arr = np.asarray(values) * scale
    return f"{arr.mean():.1f} ± {arr.std(ddof=1) if len(arr) > 1 else 0.0:.1f}"


def table(data: dict[str, dict[str, list[float]]], methods: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(SETTINGS) + " |", "|---|" + "---:|" * len(SETTINGS)]
    for method in methods:
        if method in data:
            lines.append(
                f"| {method} | " + " | ".join(cell(data[method][s]) for s in SETTINGS) + " |"
            )
    return lines


def targets(data: dict[str, dict[str, list[float]]]) -> list[str]:
    """The four targets of the issue on mean Recall@1, each met or missed with its margin."""
    ind_nn = mean(data["independent"]["new->new"])
    dmu = {s: mean(v) for s, v in data["dmu"].items()}
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"- **{'met' if ok else 'MISSED'}**: {text}")

    ratio = dmu["new->evolved"] / ind_nn
    line(
        ratio >= 0.9,
        f"DMU new->evolved {dmu['new->evolved']:.1%} = {ratio:.1%} of the "
        f"independent model's new->new {ind_nn:.1%} (target >= 90%)",
    )
    ratio = dmu["new->new"] / ind_nn
    bct = mean(data["bct"]["new->new"]) if "bct" in data else float("nan")
    line(
        ratio >= 0.98 and dmu["new->new"] >= bct,
        f"DMU new->new {dmu['new->new']:.1%} = {ratio:.1%} of independent (target >= 98%), "
        f"BCT new->new {bct:.1%} (target: DMU >= BCT)",
    )
    line(
        dmu["new->old"] > dmu["old->old"],
        f"DMU new->old {dmu['new->old']:.1%} vs old->old {dmu['old->old']:.1%} "
        f"(target: new->old > old->old, the BCT compatibility criterion)",
    )
    adapters = {a: mean(data[a]["new->evolved"]) for a in ADAPTERS if a in data}
    if adapters:
        best = max(adapters, key=lambda a: adapters[a])
        line(
            dmu["new->evolved"] > adapters[best],
            f"DMU new->evolved {dmu['new->evolved']:.1%} vs the best post-hoc adapter "
            f"({best}) {adapters[best]:.1%} (target: DMU higher)",
        )
    return out


def chart(
    data: dict[str, dict[str, list[float]]], methods: list[str], title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in methods if m in data]
    settings = ["new->old", "new->evolved", "new->mixed", "new->new"]
    width = 0.8 / len(settings)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(shown) + 2), 4.2))
    for i, setting in enumerate(settings):
        means = [100 * mean(data[m][setting]) for m in shown]
        stds = [
            100 * np.std(data[m][setting], ddof=1) if len(data[m][setting]) > 1 else 0
            for m in shown
        ]
        xs = np.arange(len(shown)) + (i - (len(settings) - 1) / 2) * width
        ax.bar(xs, means, width, yerr=stds, label=setting, capsize=2)
    old = 100 * mean(data["independent"]["old->old"])
    backfill = 100 * mean(data["independent"]["new->new"])
    ax.axhline(old, color="gray", ls="--", lw=1, label=f"old->old {old:.1f}")
    ax.axhline(backfill, color="black", ls=":", lw=1, label=f"full backfill {backfill:.1f}")
    ax.set_xticks(np.arange(len(shown)), [m.replace(" ", "\n", 1) for m in shown], fontsize=8)
    ax.set_ylabel("Recall@1 (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return [
        f"- CPU: {cpu}, `nproc` = {nproc}, {mem:.0f} GiB RAM, no GPU",
        f"- Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, {platform.platform()}",
    ]


METHOD_ORDER = [
    "independent",
    "bct",
    "dmu",
    "dmu gamma=0",
    "dmu lambda_f=0",
    "dmu beta=0",
    *ADAPTERS,
]


def render(payload: dict[str, Any], docs: Path, commands: list[str], notes: str) -> str:
    rows = payload["rows"]
    examples = list(dict.fromkeys(r["example"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "# Compatibility benchmark",
        "",
        "Generated by `benchmarks/report.py` from the raw rows of `benchmarks/compat.py`;",
        "nothing on this page is typed by hand. Retrieval is exact cosine search on",
        "held-out identities; each cell is mean ± std (sample, ddof=1) over seeds "
        f"{', '.join(map(str, seeds))}, in %.",
        "",
        "Settings: `old->old` today's system; `new->old` new queries on the untouched old",
        "gallery; `new->evolved` new queries on psi(old), what `evolve` deploys; `new->mixed`",
        "half the gallery evolved, half natively new (the store after new inserts);",
        "`new->new` a fully re-embedded gallery. The full-backfill reference is the",
        "`independent` model's `new->new`. Adapters are fitted old -> the independent",
        "model's embeddings of the training table (post-hoc, no compatibility training).",
        "",
    ]
    for example in examples:
        r1 = collect(rows, example, "R@1")
        lines += [f"## {TITLES.get(example, example)}", ""]
        ex_rows = [r for r in rows if r["example"] == example]
        first = ex_rows[0]
        lines += [
            f"{first['queries']} queries, {first['gallery']} gallery items per seed; "
            f"training config (shared): `{json.dumps(payload['examples'][example])}`; "
            f"data: `{json.dumps(payload['prepare'][example])}`.",
            "",
            "### Targets (Recall@1, means over seeds)",
            "",
            *targets(r1),
            "",
            "### Recall@1",
            "",
            *table(r1, METHOD_ORDER),
            "",
            "### mAP",
            "",
            *table(collect(rows, example, "mAP"), METHOD_ORDER),
            "",
        ]
        if "TAR@FAR=1e-03" in first["settings"]["new->new"]:
            lines += ["### TAR@FAR=1e-3 (all query-gallery pairs)", ""]
            lines += [*table(collect(rows, example, "TAR@FAR=1e-03"), METHOD_ORDER), ""]
        gains = [
            r for r in ex_rows if r["derived"]["gain_captured"].get("new->evolved") is not None
        ]
        lines += ["### Derived figures (Recall@1)", ""]
        lines += [
            "| method | compatible (seeds) | gain captured, new->evolved | "
            "gain captured, new->mixed | new->new degradation |",
            "|---|---:|---:|---:|---:|",
        ]
        for method in METHOD_ORDER:
            mine = [r for r in gains if r["method"] == method]
            if not mine:
                continue
            comp = sum(r["derived"]["compatible"]["R@1"] for r in mine)
            ev = [r["derived"]["gain_captured"]["new->evolved"]["R@1"] for r in mine]
            mx = [r["derived"]["gain_captured"]["new->mixed"]["R@1"] for r in mine]
            deg = [r["derived"]["new_to_new_degradation"]["R@1"] for r in mine]
            lines.append(
                f"| {method} | {comp}/{len(mine)} | {cell(ev)} | {cell(mx)} | {cell(deg)} |"
            )
        png = docs / f"results_{example}.png"
        chart(r1, METHOD_ORDER, TITLES.get(example, example), png)
        secs = {m: [r["train_seconds"] for r in ex_rows if r["method"] == m] for m in METHOD_ORDER}
        lines += [
            "",
            f"![Recall@1 per method, {example}]({png.name})",
            "",
            "Training time per run (s, mean): "
            + ", ".join(f"{m} {np.mean(v):.0f}" for m, v in secs.items() if v)
            + ".",
            "",
        ]
    lines += ["## Notes", "", notes.strip(), ""] if notes.strip() else []
    lines += [
        "## How this page was produced",
        "",
        "```bash",
        *commands,
        "```",
        "",
        f"Whole benchmark wall time: {payload['seconds'] / 60:.1f} min.",
        "",
        "Machine:",
        "",
        *machine(),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "raw", type=Path, nargs="+", help="JSON files written by benchmarks/compat.py"
    )
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--notes",
        type=Path,
        default=ROOT / "benchmarks" / "notes.md",
        help="Markdown appended as the Notes section (what was tried, why).",
    )
    parser.add_argument(
        "--command",
        action="append",
        default=[],
        help="A command that produced the raw results, for the page.",
    )
    args = parser.parse_args()
    # Several raw files (e.g. one per example, run side by side) merge into one page.
    parts = [json.loads(p.read_text()) for p in args.raw]
    payload = {
        "argv": [],
        "seconds": max(p["seconds"] for p in parts),
        "examples": {k: v for p in parts for k, v in p["examples"].items()},
        "prepare": {k: v for p in parts for k, v in p["prepare"].items()},
        "rows": [r for p in parts for r in p["rows"]],
    }
    args.docs.mkdir(parents=True, exist_ok=True)
    commands = args.command or [f"python benchmarks/compat.py {' '.join(p['argv'])}" for p in parts]
    shown = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in args.raw]
    commands.append(f"python benchmarks/report.py {' '.join(shown)}")
    notes = args.notes.read_text() if args.notes.exists() else ""
    page = render(payload, args.docs, commands, notes)
    (args.docs / "results.md").write_text(page)
    print(f"wrote {args.docs / 'results.md'}")


if __name__ == "__main__":
    main()

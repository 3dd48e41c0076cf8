"""Turn the raw benchmark JSON into docs/results.md and the PNG charts in docs/.

    python benchmarks/report.py benchmarks/results/compat_eval.json

Every number on the page is computed here from the raw rows: mean +- std over
seeds per example, method and setting, then the targets (floor, share of the
full backfill, new->new, post-hoc adapters, transition mode), each marked met
or missed with its numbers, and the quality gate's verdict validated at
training set against the verdict on the test table.
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
from backfill_report import section as backfill_section

from dmu_migrate.quality import verdict

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("old->old", "new->old", "new->evolved", "new->mixed", "new->new", "fused")
ADAPTERS = ("adapter procrustes", "adapter affine", "adapter mlp")
TITLES = {
    "wordnet_text": "WordNet: paraphrase-MiniLM-L3-v2 -> all-MiniLM-L6-v2 (+ trained head)",
    "fashion_mnist": "Fashion-MNIST: CNN on 30% of the training data -> CNN on 100%",
    "glyphs": "CJK glyphs: EfficientNet-Lite0 features, old head on 30% of the training "
    "ideographs -> new model on 100% (unseen test ideographs)",
}
MISSING = "-"  # a setting a run did not measure (fused needs validated fusion weights)


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
    if not values:
        return MISSING
    arr = np.asarray(values) * scale
    if len(arr) == 1:
        return f"{arr[0]:.1f} (1 seed)"
    return f"{arr.mean():.1f} ± {arr.std(ddof=1):.1f}"


def table(data: dict[str, dict[str, list[float]]], methods: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(SETTINGS) + " |", "|---|" + "---:|" * len(SETTINGS)]
    for method in methods:
        if method in data:
            lines.append(
                f"| {method} | "
                + " | ".join(cell(data[method].get(s, [])) for s in SETTINGS)
                + " |"
            )
    return lines


def targets(data: dict[str, dict[str, list[float]]]) -> list[str]:
    """The targets on mean Recall@1, each met or MISSED with its numbers."""
    ind_nn = mean(data["independent"]["new->new"])
    dmu = {s: mean(v) for s, v in data["dmu"].items()}
    old = dmu["old->old"]
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"- **{'met' if ok else 'MISSED'}**: {text}")

    line(
        dmu["new->evolved"] > old,
        f"floor: DMU new->evolved {dmu['new->evolved']:.1%} vs old->old {old:.1%} "
        f"(target: higher; the deployed state never retrieves worse than today's system)",
    )
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
    adapters = {a: mean(data[a]["new->evolved"]) for a in ADAPTERS if a in data}
    if adapters:
        best = max(adapters, key=lambda a: adapters[a])
        line(
            dmu["new->evolved"] > adapters[best],
            f"DMU new->evolved {dmu['new->evolved']:.1%} vs every post-hoc adapter's "
            f"(best: {best} {adapters[best]:.1%}; "
            + ", ".join(f"{a.removeprefix('adapter ')} {v:.1%}" for a, v in adapters.items())
            + ") (target: DMU higher)",
        )
    if "fused" in dmu:
        gain = ind_nn - old
        share = (dmu["fused"] - old) / gain if gain else float("nan")
        line(
            dmu["fused"] > old,
            f"transition: DMU fused {dmu['fused']:.1%} vs old->old {old:.1%} (target: higher); "
            f"it captures {share:.1%} of the full backfill's gain "
            f"((fused - old->old) / (independent new->new {ind_nn:.1%} - old->old))",
        )
    else:
        line(False, "transition: DMU has no fused setting (no validated fusion weights)")
    compatible = "holds" if dmu["new->old"] > old else "does not hold"
    bct_old = (
        f"; BCT new->old {mean(data['bct']['new->old']):.1%}"
        if "new->old" in data.get("bct", {})
        else ""
    )
    out.append(
        f"- information (not a target): DMU new->old {dmu['new->old']:.1%} vs old->old "
        f"{old:.1%}{bct_old}: the BCT compatibility criterion (new->old > old->old) "
        f"{compatible} for DMU"
    )
    return out


def deploys(figures: dict[str, Any] | None) -> bool | None:
    """The gate's verdict on a set of figures (new->evolved vs old->old, R@1)."""
    return verdict(figures, "").deploy


def gate(rows: list[dict[str, Any]], methods: list[str]) -> list[str]:
    """Per trained method: the verdict validated at training next to the test table's."""
    lines = [
        "| method | validated at training: new->evolved vs old->old | "
        "test table: new->evolved vs old->old | verdicts agree (seeds) |",
        "|---|---|---|---:|",
    ]
    held = [r["quality"] for r in rows if r.get("quality", {}).get("settings")]
    if held:
        kind = held[0].get("held_out", "identities")
        counts = sorted({(q.get("identities"), q.get("rows")) for q in held}, key=str)
        shown = ", ".join(f"{i} {kind} ({n} rows)" for i, n in counts)
        lines = [f"Held out of the training table at training, per run: {shown}.", "", *lines]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        validated = [(r.get("quality") or {}).get("settings") for r in mine]
        tested = [r["settings"] for r in mine]

        def summary(figures: list[dict[str, Any] | None]) -> str:
            usable = [f for f in figures if deploys(f) is not None]
            if not usable:
                return MISSING
            ev = [f["new->evolved"]["R@1"] for f in usable if f is not None]
            oo = [f["old->old"]["R@1"] for f in usable if f is not None]
            n = sum(bool(deploys(f)) for f in usable)
            return f"deploy {n}/{len(usable)}: {cell(ev)} vs {cell(oo)}"

        pairs = [(deploys(v), deploys(t)) for v, t in zip(validated, tested, strict=True)]
        judged = [(v, t) for v, t in pairs if v is not None and t is not None]
        agree = f"{sum(v == t for v, t in judged)}/{len(judged)}" if judged else MISSING
        lines.append(f"| {method} | {summary(validated)} | {summary(tested)} | {agree} |")
    return lines


def chart(
    data: dict[str, dict[str, list[float]]], methods: list[str], title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in methods if m in data]
    settings = ["new->old", "new->evolved", "new->mixed", "new->new"]
    if any("fused" in data[m] for m in shown):
        settings.append("fused")
    width = 0.8 / len(settings)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(shown) + 2), 4.2))
    for i, setting in enumerate(settings):
        values = [data[m].get(setting, []) for m in shown]
        means = [100 * mean(v) if v else float("nan") for v in values]
        stds = [100 * np.std(v, ddof=1) if len(v) > 1 else 0 for v in values]
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
    "dmu joint",
    "dmu gamma=0",
    "dmu beta=0",
    "dmu lambda_b=0",
    *ADAPTERS,
]
TRAINED = [m for m in METHOD_ORDER if m not in ADAPTERS]


def search_cost(rows: list[dict[str, Any]]) -> list[str]:
    """The transition mode's price beside its gain: vector width and exact-search time."""
    costs = [r["search_cost"] for r in rows if r.get("search_cost")]
    if not costs:
        return []
    d_evolved, d_fused = costs[0]["evolved_dim"], costs[0]["fused_dim"]
    t_evolved = mean([c["evolved_seconds"] for c in costs])
    t_fused = mean([c["fused_seconds"] for c in costs])
    return [
        "",
        f"Transition cost (DMU): vectors {d_fused}-d instead of {d_evolved}-d "
        f"({d_fused / d_evolved:.2f}x storage); exact search of every test query "
        f"{1000 * t_fused:.1f} ms vs {1000 * t_evolved:.1f} ms ({t_fused / t_evolved:.2f}x, "
        f"numpy on this machine, median of 5); each query also runs the old encoder.",
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
        "`new->new` a fully re-embedded gallery; `fused` the transition mode, old and",
        "evolved vectors side by side queried by both encoders with the weights fitted at",
        "training (`-` where a run has none). The full-backfill reference is the",
        "`independent` model's `new->new`. Adapters are fitted old -> the independent",
        "model's embeddings of the training table (post-hoc, no compatibility training).",
        "Every example is trained with the default settings of `dmu-migrate train`",
        "(the training config below lists what differs from them).",
        "",
    ]
    for example in examples:
        r1 = collect(rows, example, "R@1")
        lines += [f"## {TITLES.get(example, example)}", ""]
        ex_rows = [r for r in rows if r["example"] == example]
        first = ex_rows[0]
        lines += [
            f"{first['queries']} queries, {first['gallery']} gallery items per seed; "
            f"training config (shared, beyond the defaults): "
            f"`{json.dumps(payload['examples'][example])}`; "
            f"data: `{json.dumps(payload['prepare'][example])}`.",
            "",
            "### Targets (Recall@1, means over seeds)",
            "",
            *targets(r1),
            *search_cost(ex_rows),
            "",
            "### Quality gate",
            "",
            "The verdict `train` validated on data it held out (manifest quality; whole",
            "identities, or rows of each class below 50 classes: new->evolved vs old->old,",
            "Recall@1) next to the verdict on the test table;",
            "`deploy` means new->evolved >= old->old. Cells: deploy count over seeds,",
            "then new->evolved vs old->old in %.",
            "",
            *gate(ex_rows, TRAINED),
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
            "gain captured, new->mixed | gain captured, fused | new->new degradation |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for method in METHOD_ORDER:
            mine = [r for r in gains if r["method"] == method]
            if not mine:
                continue
            comp = sum(r["derived"]["compatible"]["R@1"] for r in mine)
            ev = [r["derived"]["gain_captured"]["new->evolved"]["R@1"] for r in mine]
            mx = [r["derived"]["gain_captured"]["new->mixed"]["R@1"] for r in mine]
            fu = [
                r["derived"]["gain_captured"]["fused"]["R@1"]
                for r in mine
                if "fused" in r["derived"]["gain_captured"]
            ]
            deg = [r["derived"]["new_to_new_degradation"]["R@1"] for r in mine]
            lines.append(
                f"| {method} | {comp}/{len(mine)} | {cell(ev)} | {cell(mx)} | {cell(fu)} "
                f"| {cell(deg)} |"
            )
        lines += ["", *backfill_section(ex_rows)]
        png = docs / f"results_{example}.png"
        chart(r1, METHOD_ORDER, TITLES.get(example, example), png)
        secs = {
            m: [r["train_seconds"] for r in ex_rows if r["method"] == m and r["train_seconds"]]
            for m in METHOD_ORDER
        }
        timed = ", ".join(f"{m} {np.mean(v):.0f}" for m, v in secs.items() if v)
        lines += [
            "",
            f"![Recall@1 per method, {example}]({png.name})",
            "",
            f"Training time per run (s, mean): {timed}."
            if timed
            else "Training time: not measured (the artifacts were reused, `compat.py --reuse`).",
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

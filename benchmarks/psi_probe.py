"""Can any closed-form psi lift new->evolved past old->old? A probe on the val split.

Under the defaults psi is one affine map A o + b fitted by least squares from the
stored old vectors to the kept new model's embeddings, so a new query q scores
an evolved item by <q, A o + b>: a bilinear score between the new and the old
space. This probe asks whether a better member of that family exists for the
trained DMU new model of each example (seed 0, the artifacts of ``compat.py``):
ridge strengths, shrinkage of A towards the identity (same-width spaces only),
blending the evolved vector with the old one, and the reverse fit (the new
embedding regressed onto the old space, i.e. the query mapped into old space).
Everything is fitted on the training table and scored on the VAL split; the
test split is never read.

    python benchmarks/psi_probe.py --data data/bench --work data/bench/work

The section between ``<!-- probe:start -->`` and ``<!-- probe:end -->`` of
docs/method.md is rewritten.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from compat import EXAMPLES, ROOT
from markdown import replace_section
from val_probe import open_probe

from dmu_migrate.metrics import l2_normalize

SECTION = "probe"
RIDGE = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # in units of mean squared feature energy
SHRINK = (0.0, 1.0)  # prior on A: 0 (plain ridge) or the identity
BLEND = (0.0, 0.3, 1.0)  # gallery vector psi(o) + w * o


def ridge(x: np.ndarray, y: np.ndarray, lam: float, prior: np.ndarray | None = None) -> np.ndarray:
    """Affine least squares [x 1] W ~ y with lam * n * |W - prior|^2 on the linear part."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    reg = lam * len(x) / x.shape[1] * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0  # the offset is not shrunk
    p = np.zeros((xb.shape[1], y.shape[1])) if prior is None else prior
    return np.linalg.solve(xb.T @ xb + reg, xb.T @ y + reg @ p)


def affine(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return l2_normalize(np.hstack([x, np.ones((len(x), 1))]) @ w)


def probe(example: str, data: Path, work: Path) -> dict[str, Any]:
    p = open_probe(example, data, work, embed_train=True)
    tr, ev, r1 = p.on_train, p.on_val, p.r1

    o_tr, o_ev = l2_normalize(tr["old"]), l2_normalize(ev["old"])
    f_tr, f_ev = l2_normalize(tr["new"]), l2_normalize(ev["new"])
    same_width = o_tr.shape[1] == f_tr.shape[1]
    family = []
    for lam, shrink, blend in itertools.product(RIDGE, SHRINK, BLEND):
        if (shrink or blend) and not same_width:
            continue
        prior = None
        if shrink:
            prior = np.zeros((o_tr.shape[1] + 1, f_tr.shape[1]))
            prior[:-1] = shrink * np.eye(o_tr.shape[1])
        gallery = affine(o_ev, ridge(o_tr, f_tr, lam, prior))
        if blend:
            gallery = l2_normalize(gallery + blend * o_ev)
        family.append({"ridge": lam, "shrink": shrink, "blend": blend, "R@1": r1(f_ev, gallery)})
    reverse = [
        {"ridge": lam, "R@1": r1(affine(f_ev, ridge(f_tr, o_tr, lam)), o_ev)} for lam in RIDGE
    ]
    return {
        "example": example,
        "old->old": r1(o_ev, o_ev),
        "new->old": r1(f_ev, o_ev),
        "new->evolved": r1(f_ev, l2_normalize(ev["evolved"])),
        "new->new": r1(f_ev, f_ev),
        "family": family,
        "reverse": reverse,
    }


def section(rows: list[dict[str, Any]], command: str, seconds: float) -> str:
    lines = [
        "## Probe: the best closed-form psi on val",
        "",
        "Written by `benchmarks/psi_probe.py`. For the seed-0 DMU new model of each",
        "example: Recall@1 (%) on the val split of the default psi, of the best of",
        f"{len(RIDGE) * len(SHRINK) * len(BLEND)} closed-form variants (ridge strength x",
        "shrinkage towards the identity x blending psi(o) with o; the last two need",
        "same-width spaces), and of the reverse fit (the new embedding regressed onto",
        "the old space, searched against the stored vectors).",
        "",
        "| example | old->old | new->old | new->evolved (default psi) | best variant | "
        "reverse fit | new->new |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        best = max(r["family"], key=lambda v: v["R@1"])
        rev = max(r["reverse"], key=lambda v: v["R@1"])
        setting = f"ridge {best['ridge']:g}, shrink {best['shrink']:g}, blend {best['blend']:g}"
        lines.append(
            f"| {r['example']} | {100 * r['old->old']:.1f} | {100 * r['new->old']:.1f} | "
            f"{100 * r['new->evolved']:.1f} | {100 * best['R@1']:.1f} ({setting}) | "
            f"{100 * rev['R@1']:.1f} | {100 * r['new->new']:.1f} |"
        )
    lines += ["", "```bash", command, "```", "", f"Probe wall time: {seconds / 60:.1f} min."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=list(EXAMPLES))
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "benchmark")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "method.md")
    parser.add_argument(
        "--raw", type=Path, default=ROOT / "benchmarks" / "results" / "psi_probe_val.json"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    for example in args.examples:
        rows.append(probe(example, args.data, args.work))
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("family", "reverse")}))
    seconds = time.perf_counter() - start
    args.raw.parent.mkdir(parents=True, exist_ok=True)
    args.raw.write_text(json.dumps(rows, indent=2) + "\n")
    command = f"python benchmarks/psi_probe.py --data {args.data.as_posix()} --work {args.work.as_posix()}"
    replace_section(SECTION, section(rows, command, seconds), args.doc)


if __name__ == "__main__":
    main()

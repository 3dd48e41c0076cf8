"""Can the transition mode outlive the old encoder? A probe on the val split.

The transition mode scores a gallery item [o ; psi(o)] with a query
[a q_old ; b q_new], so the old encoder must still run at query time. This probe
replaces q_old by a query head distilled from the old model: a ridge map from the
new model's input features (standardised) to the stored old vectors of the
training table, so that the new encoder alone could build the fused query. For
the seed-0 DMU new model of each example (the artifacts of ``compat.py``), with
the fused weight a picked on the val split itself (a grid of 11, the most the
mode could gain), it prints Recall@1 (%) of the true and the distilled fusion
beside new->evolved and old->old. The test split is never read.

    python benchmarks/distilled_query_probe.py --data data/bench --work data/bench/work
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from compat import EXAMPLES, ROOT
from val_probe import open_probe

from dmu_migrate.metrics import l2_normalize

RIDGE = (1.0, 10.0, 100.0)  # in units of the number of input features
WEIGHTS = np.linspace(0.0, 1.0, 11)  # a, the old half's weight; b = 1 - a


def probe(example: str, data: Path, work: Path) -> dict[str, Any]:
    p = open_probe(example, data, work)
    ev, train = p.on_val, p.train

    def r1(queries: np.ndarray, gallery: np.ndarray) -> float:
        return 100 * p.r1(queries, gallery)

    old, new, evolved = (l2_normalize(ev[k]) for k in ("old", "new", "evolved"))

    def fused(q_old: np.ndarray) -> float:
        gallery = np.hstack([old, evolved])
        return max(r1(np.hstack([a * q_old, (1 - a) * new]), gallery) for a in WEIGHTS)

    mean, std = train.x.mean(0), train.x.std(0) + 1e-6
    z_tr, z_ev = (train.x - mean) / std, (p.val.x - mean) / std
    target = l2_normalize(train.old)
    distilled = {}
    for lam in RIDGE:
        reg = lam * z_tr.shape[1] * np.eye(z_tr.shape[1])
        head = l2_normalize(z_ev @ np.linalg.solve(z_tr.T @ z_tr + reg, z_tr.T @ target))
        distilled[lam] = {"distilled->old": r1(head, old), "fused": fused(head)}
    best = max(distilled, key=lambda lam: distilled[lam]["fused"])
    return {
        "example": example,
        "old->old": r1(old, old),
        "new->old": r1(new, old),
        "new->evolved": r1(new, evolved),
        "fused (q_old)": fused(old),
        "ridge": best,
        **{f"{k} (distilled)": v for k, v in distilled[best].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=list(EXAMPLES))
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "benchmark")
    args = parser.parse_args()
    for example in args.examples:
        row = probe(example, args.data, args.work)
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()

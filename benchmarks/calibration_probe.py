"""Calibrated origins on a held-out table: new->mixed R@1 by native share and offset.

For a trained artifact and a table it never trained on (a val split, with query and
gallery roles or leave-one-out), scores new queries against mixed galleries (each
share of the gallery natively new, seeded random draws) with every evolved item's
score raised by an offset, exactly (the inner-product encoding); then, at the given
offsets, the same galleries stored as a cosine collection holds them, with the
evolved item's extra coordinate k = c (left as it falls) or k = c / sqrt(1 - c^2)
(calibration.stored_constant). docs/method.md, "Calibrated origins", has its output.

    python benchmarks/calibration_probe.py data/wordnet/val.parquet adapters/wordnet-dmu \\
        --encodings 0.05 0.15 0.3
"""

from __future__ import annotations

import argparse

import numpy as np

from dmu_migrate import calibration
from dmu_migrate.artifact import load_artifact
from dmu_migrate.data import Columns, read_table
from dmu_migrate.evaluation import embed, split_roles
from dmu_migrate.metrics import l2_normalize, retrieval_scores

SHARES = (0.05, 0.1, 0.2, 0.3, 0.5)
OFFSETS = (-0.1, -0.05, 0.0, 0.02, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table")
    parser.add_argument("artifact")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--encodings", type=float, nargs="*", default=[])
    args = parser.parse_args()

    artifact = load_artifact(args.artifact)
    table = read_table(args.table, Columns(), need_x=artifact.new_model_path is not None)
    vectors, _ = embed(artifact, table)
    q_idx, g_idx, loo = split_roles(table, Columns())
    q, ql = l2_normalize(vectors["new"][q_idx]), table.labels[q_idx]
    evolved, new = l2_normalize(vectors["evolved"][g_idx]), l2_normalize(vectors["new"][g_idx])
    gl = table.labels[g_idx]
    genuine = ql[:, None] == gl[None, :]
    if loo:
        np.fill_diagonal(genuine, False)
    print(
        f"{args.artifact} on {args.table}: {len(q)} queries, {len(gl)} gallery items, "
        f"fitted offset {artifact.offset}"
    )
    print(
        f"mean cosine of a query to its own identity's items: evolved "
        f"{(q @ evolved.T)[genuine].mean():.3f}, native {(q @ new.T)[genuine].mean():.3f}"
    )
    rng = np.random.default_rng(args.seed)
    draws = {
        s: [rng.permutation(len(gl))[: round(s * len(gl))] for _ in range(args.draws)]
        for s in SHARES
    }
    answerable = genuine.any(axis=1)

    def exact(offset: float, native: np.ndarray) -> float:
        scores = q @ calibration.gallery(evolved, new, native, 0.0).T
        scores += np.where(np.isin(np.arange(len(gl)), native), 0.0, offset)[None, :]
        if loo:
            np.fill_diagonal(scores, -np.inf)
        top = scores.argmax(axis=1)
        return float((gl[top] == ql)[answerable].mean())

    def stored(k: float, native: np.ndarray) -> float:
        gallery = l2_normalize(calibration.gallery(evolved, new, native, 0.0))
        column = np.where(np.isin(np.arange(len(gl)), native), 0.0, k).astype(np.float32)
        wide = np.hstack([gallery, column[:, None]])
        queries = calibration.queries(q, 1.0)
        return float(retrieval_scores(queries, ql, wide, gl, ks=(1,), leave_one_out=loo).recall[1])

    print(
        f"all evolved R@1 {exact(0.0, np.array([], int)):.4f}, all native {exact(0.0, np.arange(len(gl))):.4f}"
    )
    print("| offset | " + " | ".join(f"{s:.0%} native" for s in SHARES) + " | mean 5-30% |")
    for offset in sorted({*OFFSETS, artifact.offset}):
        row = [float(np.mean([exact(offset, n) for n in draws[s]])) for s in SHARES]
        cells = " | ".join(f"{100 * v:.2f}" for v in row)
        print(f"| {offset:+.2f} | {cells} | {100 * np.mean(row[:4]):.2f} |")
    for offset in args.encodings:
        mixes = [n for s in SHARES[:4] for n in draws[s]]
        found = {
            "exact offset (ip, k = c)": np.mean([exact(offset, n) for n in mixes]),
            "cosine, k = c": np.mean([stored(offset, n) for n in mixes]),
            "cosine, k = c / sqrt(1 - c^2)": np.mean(
                [stored(calibration.stored_constant(offset), n) for n in mixes]
            ),
        }
        for name, value in found.items():
            print(f"c = {offset}: {name}: mean R@1 over 5-30% native {100 * value:.3f}")


if __name__ == "__main__":
    main()

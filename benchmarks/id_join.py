"""The id merge-join of catch-up and verification, in ids per second, at 10M ids.

Catch-up compares every source id (with the checksum of its vector) against
every target id (with its origin and source-checksum tags); verification
compares ids alone. Both now join a window of pages at a time with numpy
(dmu_migrate/evolve/id_join.py); the per-id Python merge they replaced is
kept below as the baseline. No store is involved: the pages are made in
memory, as the stores hand them over (16,384 ids per page, ascending), so the
figure is the join's own ceiling, which the store's read rate then bounds.

Data: ``--ids`` source ids; the target lacks 1% of them (missing), holds 1%
that the source lacks (deleted since), and 1% of the shared ids carry a stale
checksum. Both methods must sort every id into the same lists.

    python benchmarks/id_join.py --ids 10000000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from markdown import publish

from dmu_migrate.evolve.id_join import Page, windows
from dmu_migrate.evolve.sync import EVOLVED, SyncReport, _sort_window
from dmu_migrate.evolve.verify import ID_BATCH, diff_sorted

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "id_join.json"


def make(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source ids, target ids, target ids whose checksum is stale)."""
    rng = np.random.default_rng(seed)
    universe = np.sort(rng.choice(4 * n, size=int(n * 1.01), replace=False)).astype(np.int64)
    roles = rng.random(len(universe))
    source = universe[roles >= 0.01 / 1.01]  # the last ~1% exist in the target only
    target = universe[(roles < 0.01 / 1.01) | (roles >= 0.02)]  # ~1% of the source missing
    stale = target[rng.random(len(target)) < 0.01]
    return source, target, stale


def column(values: Any) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def source_pages(ids: np.ndarray) -> Iterator[Page]:
    for start in range(0, len(ids), ID_BATCH):
        chunk = ids[start : start + ID_BATCH]
        yield chunk, (column([f"{i:016x}" for i in chunk.tolist()]), column([None] * len(chunk)))


def target_pages(ids: np.ndarray, stale: np.ndarray) -> Iterator[Page]:
    stale_set = set(stale.tolist())
    for start in range(0, len(ids), ID_BATCH):
        chunk = ids[start : start + ID_BATCH]
        sums = [f"{i + 1:016x}" if i in stale_set else f"{i:016x}" for i in chunk.tolist()]
        n = len(chunk)
        yield chunk, (column([EVOLVED] * n), column(sums), column([None] * n))


def per_id_compare(source: Iterator[Page], target: Iterator[Page]) -> SyncReport:
    """The previous catch-up merge: one Python step per id (sampling left out)."""

    def flat(pages: Iterator[Page]) -> Iterator[tuple[Any, tuple[Any, ...]]]:
        for ids, cols in pages:
            yield from zip(ids.tolist(), zip(*(c.tolist() for c in cols), strict=True), strict=True)

    report = SyncReport()
    a, b = flat(source), flat(target)
    x, y = next(a, None), next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            report.missing.append(x[0])  # type: ignore[index]
            x = next(a, None)
        elif x is None or y[0] < x[0]:
            if y[1][0] == EVOLVED:
                report.extra.append(y[0])
            else:
                report.native += 1
            y = next(b, None)
        else:
            origin, source_sum, target_part = y[1]
            checksum, source_part = x[1]
            if origin != EVOLVED:
                report.native += 1
            elif (source_sum is not None and source_sum != checksum) or source_part != target_part:
                report.stale.append(x[0])
            x, y = next(a, None), next(b, None)
    return report


def windowed_compare(source: Iterator[Page], target: Iterator[Page]) -> SyncReport:
    report = SyncReport()
    for w in windows(source, target, widths=(2, 3)):
        _sort_window(w, True, report)
    return report


def per_id_diff(left: list[np.ndarray], right: list[np.ndarray]) -> tuple[list[Any], list[Any]]:
    """The previous verification merge: one Python step per id."""

    def flat(chunks: list[np.ndarray]) -> Iterator[Any]:
        for chunk in chunks:
            yield from chunk.tolist()

    a, b = flat(left), flat(right)
    only_left: list[Any] = []
    only_right: list[Any] = []
    x, y = next(a, None), next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x < y):
            only_left.append(x)
            x = next(a, None)
        elif x is None or y < x:
            only_right.append(y)
            y = next(b, None)
        else:
            x, y = next(a, None), next(b, None)
    return only_left, only_right


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=10_000_000)
    args = parser.parse_args()
    source, target, stale = make(args.ids)
    rows: list[dict[str, Any]] = []

    # Catch-up: the pages (with their checksum strings) are made before timing.
    src, tgt = list(source_pages(source)), list(target_pages(target, stale))
    seconds_old, old = timed(per_id_compare, iter(src), iter(tgt))
    seconds_new, new = timed(windowed_compare, iter(src), iter(tgt))
    if (old.missing, old.extra, old.stale) != (new.missing, new.extra, new.stale):
        raise SystemExit("the two catch-up joins disagree")
    rows.append({"join": "catch-up (ids + checksums)", "old_s": seconds_old, "new_s": seconds_new})
    del src, tgt

    left = [source[i : i + ID_BATCH] for i in range(0, len(source), ID_BATCH)]
    right = [target[i : i + ID_BATCH] for i in range(0, len(target), ID_BATCH)]
    seconds_old, old_diff = timed(per_id_diff, left, right)
    seconds_new, new_diff = timed(diff_sorted, left, right)
    if old_diff != new_diff:
        raise SystemExit("the two id diffs disagree")
    rows.append({"join": "verification (ids only)", "old_s": seconds_old, "new_s": seconds_new})

    ids = len(source) + len(target)
    for row in rows:
        row["ids"] = ids
        row["old_ids_per_s"] = ids / row["old_s"]
        row["new_ids_per_s"] = ids / row["new_s"]
    lines = [
        "## Id merge-join (`benchmarks/id_join.py`)",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores shared with other work, "
        f"{time.strftime('%Y-%m-%d')}. {len(source):,} source ids against {len(target):,} "
        "target ids (1% missing, 1% deleted since, 1% stale), in pages of 16,384 made in "
        "memory: the join's own rate, which a store's read rate then bounds. Ids per second "
        "count both sides. Both methods sorted every id into the same lists; the windowed join "
        "also drew the verification sample, the baseline did not.",
        "",
        "| join | per-id Python merge s | windowed numpy join s | ids/s before | ids/s now "
        "| speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['join']} | {r['old_s']:.1f} | {r['new_s']:.1f} | {r['old_ids_per_s']:,.0f} "
            f"| {r['new_ids_per_s']:,.0f} | {r['old_s'] / r['new_s']:.1f}x |"
        )
    command = "python benchmarks/id_join.py " + " ".join(sys.argv[1:])
    lines += ["", f"Command: `{command}`"]
    publish(RESULTS, {"rows": rows, "command": command}, "id-join", "\n".join(lines))
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()

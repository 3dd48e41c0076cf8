"""Where `evolve --write-path bulk` spends its main pass, one step at a time.

On a fresh Milvus 2.3.5 server (local storage), one source of ``rows`` x ``dim``
is seeded, then each step of the bulk pass is timed alone, in order:

- reading the whole source as evolve reads it (``iter_batches``, default batches);
- writing the NumPy part files (random vectors: the adapter is not what is timed);
- importing the parts one job after another, for each part size asked for
  (a fresh target per size), and waiting until a count sees every row;
- the one-row probe import that checks the server reads ``--bulk-storage``.

The steps overlap in a real run (a part imports while the next is read), so
the pass takes about max(read, imports) + the tail: these numbers say which
one bounds it. Writes the "bulk-breakdown" section of docs/benchmarks.md and
benchmarks/results/bulk_breakdown.json.

    python benchmarks/bulk_breakdown.py --rows 1000000 --dim 128 --part-mib 256,64
    python benchmarks/bulk_breakdown.py --rows 1000000 --dim 512 --part-mib 256
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from evolve import SOURCE, machine, milvus_server, seed, settle
from markdown import replace_section

RESULTS = Path(__file__).resolve().parent / "results" / "bulk_breakdown.json"
BATCH = 8192


def read_all(uri: str, dim: int) -> float:
    from dmu_migrate.evolve.settings import batch_rows
    from dmu_migrate.stores.opener import open_store

    store = open_store(uri)
    info = store.describe(SOURCE)
    start = time.perf_counter()
    for _ in store.iter_batches(info, batch_rows(BATCH, dim)):
        pass
    seconds = time.perf_counter() - start
    store.close()
    return seconds


def import_parts(uri: str, root: Path, rows: int, dim: int, part_mib: int) -> dict[str, Any]:
    """Write ``rows`` as parts of ``part_mib`` MiB of vectors, import them one by one."""
    from pymilvus import DataType, MilvusClient

    from dmu_migrate.stores import milvus_bulk

    client = MilvusClient(uri, timeout=120)
    name = f"bulk_{part_mib}"
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("label", DataType.INT64)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index("vec", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index)
    desc = client.describe_collection(name)
    part_rows = (part_mib << 20) // (4 * dim)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    parts = []
    for k, first in enumerate(range(0, rows, part_rows)):
        part = milvus_bulk.Part(root / f"{name}-{k}", desc, "vec", dim)
        last = min(rows, first + part_rows)
        for at in range(first, last, BATCH):
            ids = np.arange(at, min(last, at + BATCH))
            vectors = rng.standard_normal((len(ids), dim), dtype=np.float32)
            part.append({"id": ids, "label": ids % 1000}, vectors)
        parts.append(part.close())
    out: dict[str, Any] = {"part_mib": part_mib, "parts": len(parts)}
    out["write_s"] = time.perf_counter() - start
    settle()
    start = time.perf_counter()
    out["job_s"] = []
    for files in parts:
        began = time.perf_counter()
        milvus_bulk.wait(client, milvus_bulk.submit(client, name, files), name)
        out["job_s"].append(time.perf_counter() - began)
        shutil.rmtree(Path(files[0]).parent)
    out["import_s"] = time.perf_counter() - start
    start = time.perf_counter()
    out["visible"] = milvus_bulk.wait_visible(client, name, rows)
    out["visible_s"] = time.perf_counter() - start
    client.drop_collection(name)
    client.close()
    return out


def probe_s(uri: str, root: Path) -> float:
    from pymilvus import MilvusClient

    from dmu_migrate.stores import milvus_bulk
    from dmu_migrate.stores.bulk_storage import SharedDirectory

    client = MilvusClient(uri, timeout=120)
    start = time.perf_counter()
    milvus_bulk.probe(client, SharedDirectory(root))
    seconds = time.perf_counter() - start
    client.close()
    return seconds


def measure(rows: int, dim: int, part_mibs: list[int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dmu-bulk-") as tmp:
        root = Path(tmp)
        with milvus_server(root) as uri:
            case: dict[str, Any] = {"rows": rows, "dim": dim, "seed_s": seed(uri, rows, dim)}
            settle()
            case["read_s"] = read_all(uri, dim)
            case["sizes"] = []
            for mib in part_mibs:
                settle()
                case["sizes"].append(import_parts(uri, root, rows, dim, mib))
                print(f"  {rows:,} x {dim}, {mib} MiB parts: {case['sizes'][-1]}", flush=True)
            settle()
            case["probe_s"] = probe_s(uri, root)
    return case


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "## Bulk pass, step by step (`benchmarks/bulk_breakdown.py`)",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['date']}. A fresh Milvus 2.3.5 server on the same "
        "machine; each step timed alone. A run overlaps reading with the imports of earlier "
        "parts (two jobs in flight), so its main pass takes about max(read, imports) plus the "
        "last part's import and the wait until a count sees every row. Raw numbers: "
        "`benchmarks/results/bulk_breakdown.json`.",
        "",
        "| rows x dim | read the source s | part size | parts | write files s | imports s "
        "(per job) | until counted s | probe s |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for c in results["cases"]:
        for s in c["sizes"]:
            jobs = ", ".join(f"{j:.1f}" for j in s["job_s"])
            lines.append(
                f"| {c['rows']:,} x {c['dim']} | {c['read_s']:.1f} | {s['part_mib']} MiB | "
                f"{s['parts']} | {s['write_s']:.1f} | {s['import_s']:.1f} ({jobs}) | "
                f"{s['visible_s']:.1f} | {c['probe_s']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",")]

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--part-mib", type=ints, default=[256, 64])
    parser.add_argument("--render", action="store_true", help="rewrite the doc from the JSON")
    opts = parser.parse_args()
    if not opts.render:
        case = measure(opts.rows, opts.dim, opts.part_mib)
        # Keep the other sizes' cases: one invocation measures one size.
        old = json.loads(RESULTS.read_text())["cases"] if RESULTS.exists() else []
        kept = [c for c in old if (c["rows"], c["dim"]) != (case["rows"], case["dim"])]
        cases = sorted([*kept, case], key=lambda c: (c["dim"], c["rows"]))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"machine": machine(), "cases": cases}, indent=2) + "\n")
    replace_section("bulk-breakdown", render(json.loads(RESULTS.read_text())))


if __name__ == "__main__":
    main()

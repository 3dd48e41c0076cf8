"""Evolve throughput and memory next to the store's own ceiling, side by side in one run.

For each store, vector size and row count, one source collection is seeded,
then copied three ways, each in a fresh process (so each peak RSS is its own):

- raw copy: the same rows read and written through dmu-migrate's store layer
  with the same batching and read-ahead, and no adapter, ledger or
  verification: the ceiling of this access pattern on this store;
- naive copy: what a user writes by hand with the client: Milvus
  ``query_iterator`` rows (per-row dicts) -> ``insert``; Qdrant ``scroll``
  records -> ``PointStruct`` -> ``upsert``;
- ``dmu-migrate evolve``: the real command (run in-process by the worker),
  through a 256-hidden residual adapter of the shipped shape, including
  catch-up, verification and the alias cut-over;
- with ``--bulk``, on the Milvus server only: the same command with
  ``--write-path bulk`` (import jobs from files in the case's directory, which
  the local-storage server shares), after the evolve step's target is dropped.

Collections use a FLAT index, so no background index build competes for
the CPU during a measurement; what is timed is the data path.

    python benchmarks/evolve.py                               # the full matrix, docs/benchmarks.md
    python benchmarks/evolve.py --stores milvus-lite --rows 100000 --dims 128
    python benchmarks/evolve.py --stores milvus-server --rows 1000000 --dims 128,512 --bulk \\
        --results benchmarks/results/evolve-bulk.json --section evolve-bulk
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown import DOC, replace_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "evolve.json"
SOURCE, RAW, NAIVE, ALIAS = "bench_src", "bench_raw", "bench_naive", "bench"
METHODS = ("raw", "naive", "evolve")
# What evolve writes (its dmu_src is a per-row checksum of the source vector; the naive
# copy leaves it empty, which its Milvus target's schema requires it to supply).
TAGS = {"dmu_version": "v2", "dmu_from": "v1", "dmu_origin": "evolved", "dmu_src": ""}
SEED_CHUNK = 16384


# -- workers: each measurement runs in its own process ----------------------------
def worker(args: argparse.Namespace) -> dict[str, Any]:
    if args.worker == "seed":
        seconds = seed(args.uri, args.n, args.dim)
    elif args.worker == "raw":
        seconds = raw_copy(args.uri, rows_per_batch(args))
    elif args.worker == "naive":
        seconds = naive_copy(args.uri, rows_per_batch(args))
    elif args.worker == "bulk":
        return bulk_command(args)
    else:
        return evolve_command(args)
    return {"seconds": seconds}


def rows_per_batch(args: argparse.Namespace) -> int:
    """The batch evolve uses for this width (it caps wide rows), so all three copy alike."""
    from dmu_migrate.evolve.settings import batch_rows

    return batch_rows(args.batch_size, args.dim)


def seed(uri: str, rows: int, dim: int, index: str = "FLAT") -> float:
    """A source of ``rows`` random unit-norm vectors with an int label, ids 0..rows-1."""
    from dmu_migrate.stores.base import Batch
    from dmu_migrate.stores.opener import open_store

    create_source(uri, dim, index)
    store = open_store(uri)
    info = store.describe(SOURCE)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for first in range(0, rows, SEED_CHUNK):
        ids = np.arange(first, min(rows, first + SEED_CHUNK))
        vectors = rng.standard_normal((len(ids), dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.write_rows(info, SOURCE, Batch(ids, vectors, {"label": (ids % 1000).tolist()}), {})
    store.flush(SOURCE)
    store.close()
    return time.perf_counter() - start


def create_source(uri: str, dim: int, index_type: str = "FLAT") -> None:
    if uri.startswith("qdrant:"):
        from qdrant_client import QdrantClient, models

        qdrant = QdrantClient(path=uri.removeprefix("qdrant:"))
        qdrant.create_collection(
            SOURCE, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
        )
        qdrant.close()
        return
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("label", DataType.INT64)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index("vec", index_type=index_type, metric_type="COSINE")
    client.create_collection(SOURCE, schema=schema, index_params=index)
    client.close()


def raw_copy(uri: str, batch_size: int) -> float:
    from dmu_migrate.evolve.stream import Stage
    from dmu_migrate.stores.opener import open_store

    store = open_store(uri)
    start = time.perf_counter()  # creating the target counts, as it does for evolve
    info = store.describe(SOURCE)
    store.create_like(info, RAW, info.dim)
    # Read-ahead as evolve's default, so reads overlap writes the same way.
    with Stage(store.iter_batches(info, batch_size), 1, "raw-read") as batches:
        for batch in batches:
            store.write_rows(info, RAW, batch, TAGS)
    store.flush(RAW)
    seconds = time.perf_counter() - start
    store.drop_collection(RAW)
    store.close()
    return seconds


def naive_copy(uri: str, batch_size: int) -> float:
    if uri.startswith("qdrant:"):
        return naive_qdrant(uri.removeprefix("qdrant:"), batch_size)
    from pymilvus import MilvusClient

    from dmu_migrate.stores.opener import open_store

    start = time.perf_counter()  # creating the target counts, as it does for evolve
    store = open_store(uri)  # only to create the target with the source's schema
    info = store.describe(SOURCE)
    store.create_like(info, NAIVE, info.dim)
    store.close()
    client = MilvusClient(uri)
    iterator = client.query_iterator(SOURCE, batch_size=batch_size, output_fields=["*"])
    while rows := iterator.next():
        client.insert(NAIVE, [{**row, **TAGS} for row in rows])
    client.flush(NAIVE)
    seconds = time.perf_counter() - start
    client.drop_collection(NAIVE)
    client.close()
    return seconds


def naive_qdrant(path: str, batch_size: int) -> float:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=path)
    start = time.perf_counter()
    params = client.get_collection(SOURCE).config.params.vectors
    client.create_collection(NAIVE, vectors_config=params)
    offset = None
    while True:
        records, offset = client.scroll(
            SOURCE, limit=batch_size, offset=offset, with_vectors=True, with_payload=True
        )
        points = [
            models.PointStruct(id=r.id, vector=r.vector, payload={**(r.payload or {}), **TAGS})  # type: ignore[arg-type]  # scroll's vector type is wider than the model's
            for r in records
        ]
        if points:
            client.upsert(NAIVE, points)
        if offset is None:
            break
    seconds = time.perf_counter() - start
    client.delete_collection(NAIVE)
    client.close()
    return seconds


def bulk_command(args: argparse.Namespace) -> dict[str, Any]:
    """Evolve again through import jobs, into a fresh target (untimed: the evolve step's
    target is dropped and the alias put back on the source first)."""
    from pymilvus import MilvusClient

    from dmu_migrate.stores.base import LEDGER_COLLECTION

    client = MilvusClient(args.uri, timeout=120)
    client.alter_alias(SOURCE, ALIAS)
    for name in client.list_collections():
        if name not in (SOURCE, RAW, NAIVE, LEDGER_COLLECTION):
            client.drop_collection(name)
    client.close()
    storage = Path(args.uri_dir) / "bulk-files"
    storage.mkdir(exist_ok=True)
    more = ["--write-path", "bulk", "--bulk-storage", str(storage), "--restart"]
    return evolve_command(args, more)


def evolve_command(args: argparse.Namespace, more: list[str] | None = None) -> dict[str, Any]:
    """``dmu-migrate evolve ... --json`` run in this process, so its peak RSS is this one's."""
    from dmu_migrate.cli import app

    argv = [
        "evolve", "--collection", SOURCE, "--alias", ALIAS, "--adapter", args.artifact,
        "--uri", args.uri, "--batch-size", str(args.batch_size), "--json", *(more or []),
    ]  # fmt: skip
    stdout = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(stdout):
        app(argv, standalone_mode=False)
    seconds = time.perf_counter() - start
    result = json.loads(stdout.getvalue())
    return {"seconds": seconds, "phases": result["phases"], "rows_done": result["rows_done"]}


# -- the driver --------------------------------------------------------------------
def run_worker(
    method: str, uri: str, rows: int, dim: int, opts: argparse.Namespace
) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--worker", method, "--uri", uri, "--rows-n", str(rows),
        "--dim", str(dim), "--batch-size", str(opts.batch_size), "--artifact", str(opts.artifact),
        "--uri-dir", str(opts.case_dir),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} worker failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@contextlib.contextmanager
def milvus_server(workdir: Path) -> Iterator[str]:
    import fcntl

    from milvus import default_server

    # The test suite starts the same server; one at a time (etcd's ports are fixed).
    with open(Path(tempfile.gettempdir()) / "dmu-migrate-milvus-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        default_server.set_base_dir(str(workdir / "milvus-server"))
        default_server.start()
        pid = default_server.server_proc.pid
        try:
            yield f"http://127.0.0.1:{default_server.listen_port}"
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                default_server.stop()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # it may ignore SIGTERM; never leave it on the ports


def run_case(kind: str, uri: str, rows: int, dim: int, opts: argparse.Namespace) -> dict[str, Any]:
    case: dict[str, Any] = {"store": kind, "rows": rows, "dim": dim}
    case["seed_s"] = run_worker("seed", uri, rows, dim, opts)["seconds"]
    for method in METHODS:
        case[f"{method}_waited_s"] = settle()
        case[method] = run_worker(method, uri, rows, dim, opts)
        case[method]["rows_per_s"] = rows / case[method]["seconds"]
        print(
            f"  {kind} {rows:,} x {dim}: {method} {case[method]['rows_per_s']:,.0f} rows/s, "
            f"peak RSS {case[method]['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    if opts.bulk and kind == "milvus-server":
        case["bulk_waited_s"] = settle()
        case["bulk"] = run_worker("bulk", uri, rows, dim, opts)
        case["bulk"]["rows_per_s"] = rows / case["bulk"]["seconds"]
        case["bulk_vs_raw"] = case["bulk"]["rows_per_s"] / case["raw"]["rows_per_s"]
        print(
            f"  {kind} {rows:,} x {dim}: evolve --write-path bulk "
            f"{case['bulk']['rows_per_s']:,.0f} rows/s ({case['bulk_vs_raw']:.2f} x raw), "
            f"peak RSS {case['bulk']['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    case["evolve_vs_raw"] = case["evolve"]["rows_per_s"] / case["raw"]["rows_per_s"]
    case["evolve_vs_naive"] = case["evolve"]["rows_per_s"] / case["naive"]["rows_per_s"]
    return case


# The longest settle() waits for an idle machine; --settle-limit sets it (0: no wait, for
# smoke runs whose numbers are not read, such as the tests').
SETTLE_LIMIT = 90.0


def settle(idle: float = 0.8, limit: float | None = None) -> float:
    """Wait until the machine is mostly idle: a server still sealing or compacting the
    previous step's segments would otherwise slow whichever method runs next."""
    limit = SETTLE_LIMIT if limit is None else limit
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        before = _cpu_times()
        time.sleep(1.0)
        after = _cpu_times()
        busy = [a - b for a, b in zip(after, before, strict=True)]
        total = sum(busy)
        idle_share = (busy[3] + busy[4]) / total if total else 1.0  # idle + iowait
        if idle_share >= idle:
            break
    return time.perf_counter() - start


def _cpu_times() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def run_store(kind: str, opts: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    from artifacts import make_adapter_artifact  # imports torch: keep it out of the workers

    cases = []
    for dim in opts.dims:
        opts.artifact = make_adapter_artifact(root / f"adapter-{dim}", dim, dim)
        for rows in opts.rows:
            if kind == "qdrant-local" and rows > opts.qdrant_max_rows:
                print(f"  {kind} {rows:,} x {dim}: skipped (over --qdrant-max-rows)", flush=True)
                continue
            case_dir = root / f"{kind}-{rows}-{dim}"
            case_dir.mkdir()
            opts.case_dir = case_dir
            if kind == "milvus-server":
                with milvus_server(case_dir) as uri:  # a fresh server: no state carried over
                    cases.append(run_case(kind, uri, rows, dim, opts))
            else:
                uri = str(case_dir / "bench.db") if kind == "milvus-lite" else f"qdrant:{case_dir}"
                cases.append(run_case(kind, uri, rows, dim, opts))
            shutil.rmtree(case_dir, ignore_errors=True)
            save(cases, opts.results)
    return cases


def save(cases: list[dict[str, Any]], path: Path) -> None:
    """Keep every case measured so far, replacing earlier results of the same cases."""
    old = json.loads(path.read_text()) if path.exists() else {"cases": []}
    done = {(c["store"], c["rows"], c["dim"]) for c in cases}
    kept = [c for c in old["cases"] if (c["store"], c["rows"], c["dim"]) not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), "cases": kept + cases}, indent=2) + "\n")


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}  # fmt: skip


def render(results: dict[str, Any], path: Path = RESULTS) -> str:
    m = results["machine"]
    cases = sorted(results["cases"], key=lambda c: (c["store"], c["dim"], c["rows"]))
    bulk = any("bulk" in c for c in cases)
    lines = [
        f"## Evolve throughput{' and the bulk import path' if bulk else ''} "
        f"(`benchmarks/evolve.py{' --bulk' if bulk else ''}`)",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['date']}. Every store runs on this same machine "
        "(the Milvus server too), so the client and the store share the two cores. Batches as "
        "evolve's defaults make them: 8192 rows, 4096 at 512-d (its 8 MiB cap); all three "
        "copies use the same. Rows/s over the whole copy, target creation included. "
        "Evolve's time is the command's: the main pass, then catch-up (the full id diff of "
        "source and target, which verification reuses), verification (counts, 256 sampled "
        "vectors, 8 self-searches) and the cut-over; the rest is setup (ledger, lease, "
        "creating and loading the target, opening the adapter). Peak RSS is each process's "
        "own (VmHWM); for Milvus Lite it includes the embedded database engine, which runs "
        "inside the client process. Client CPU is the process's user + system time (imports "
        "included), which shows the client-side cost even where the store bounds the wall "
        f"time. Raw numbers: `benchmarks/results/{path.name}`.",
        "",
        "| store | rows x dim | raw copy rows/s | naive copy rows/s | evolve rows/s "
        "| evolve / raw | evolve / naive | main pass rows/s (/ raw) | catch-up + verify s "
        "| setup s | peak RSS MB raw / naive / evolve | client CPU s raw / naive / evolve |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in cases:
        ph = c["evolve"]["phases"]
        main = c["rows"] / ph["main_pass"]
        checks = ph.get("catch_up", 0.0) + ph.get("sync", 0.0) + ph.get("verify", 0.0)
        setup = c["evolve"]["seconds"] - sum(ph.values())
        rss = " / ".join(f"{c[k]['peak_rss_mb']:.0f}" for k in METHODS)
        cpu = " / ".join(f"{c[k]['cpu_s']:.0f}" if "cpu_s" in c[k] else "-" for k in METHODS)
        lines.append(
            f"| {c['store']} | {c['rows']:,} x {c['dim']} | {c['raw']['rows_per_s']:,.0f} "
            f"| {c['naive']['rows_per_s']:,.0f} | {c['evolve']['rows_per_s']:,.0f} "
            f"| {c['evolve_vs_raw']:.2f} | {c['evolve_vs_naive']:.2f} "
            f"| {main:,.0f} ({main / c['raw']['rows_per_s']:.2f}) | {checks:.1f} | {setup:.1f} "
            f"| {rss} | {cpu} |"
        )
    lines += ["", *verdicts(cases), *bulk_table(cases)]
    return "\n".join(lines) + "\n"


def bulk_table(cases: list[dict[str, Any]]) -> list[str]:
    """``evolve --write-path bulk`` beside the same case's raw insert copy (``--bulk`` runs)."""
    bulk = [c for c in cases if "bulk" in c]
    if not bulk:
        return []
    out = [
        "",
        "### Bulk import write path (`--bulk`)",
        "",
        "`evolve --write-path bulk` on the same source, after the evolve step's target was "
        "dropped: the main pass writes per-field NumPy files into a directory of the case that "
        "the local-storage server reads, and imports them as sealed segments (256 MiB of "
        "vectors per job, two jobs in flight); catch-up, verification and the cut-over as "
        "above. Rows/s over the whole command.",
        "",
        "| store | rows x dim | raw insert copy rows/s | evolve rows/s | evolve --write-path bulk "
        "rows/s | bulk / raw | bulk / evolve | bulk main pass s | peak RSS MB bulk |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in bulk:
        b = c["bulk"]
        out.append(
            f"| {c['store']} | {c['rows']:,} x {c['dim']} | {c['raw']['rows_per_s']:,.0f} "
            f"| {c['evolve']['rows_per_s']:,.0f} | {b['rows_per_s']:,.0f} "
            f"| {c['bulk_vs_raw']:.2f} | {b['rows_per_s'] / c['evolve']['rows_per_s']:.2f} "
            f"| {b['phases']['main_pass']:.1f} | {b['peak_rss_mb']:.0f} |"
        )
    out += ["", "Targets: bulk >= 2 x raw insert copy, peak RSS < 500 MB:", ""]
    for c in bulk:
        ok = c["bulk_vs_raw"] >= 2 and c["bulk"]["peak_rss_mb"] < 500
        out.append(
            f"- {c['store']} {c['rows']:,} x {c['dim']}: {'met' if ok else 'missed'} "
            f"({c['bulk_vs_raw']:.2f} x raw, {c['bulk']['peak_rss_mb']:.0f} MB)"
        )
    return out


def verdicts(cases: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked against this run's numbers."""
    out = ["Targets, from the table above:", ""]
    for c in cases:
        ok = c["evolve_vs_raw"] >= 0.85
        main = c["rows"] / c["evolve"]["phases"]["main_pass"] / c["raw"]["rows_per_s"]
        line = (
            f"- {c['store']} {c['rows']:,} x {c['dim']}: evolve >= 0.85 x raw copy "
            f"{'met' if ok else 'missed'} ({c['evolve_vs_raw']:.2f}; main pass alone {main:.2f})"
        )
        if c["store"] == "milvus-server":
            fast = c["evolve_vs_naive"] >= 3
            line += f"; >= 3 x naive {'met' if fast else 'missed'} ({c['evolve_vs_naive']:.2f})"
        out.append(line)
    by_key = {(c["store"], c["rows"], c["dim"]): c for c in cases}
    for (store, rows, dim), big in by_key.items():
        small = by_key.get((store, min(r for s, r, d in by_key if s == store and d == dim), dim))
        if rows < 1_000_000 or small is None or small is big:
            continue
        a, b = small["evolve"]["peak_rss_mb"], big["evolve"]["peak_rss_mb"]
        growth = b / a - 1
        out.append(
            f"- {store} x {dim}: evolve peak RSS {a:.0f} MB at {small['rows']:,} rows, "
            f"{b:.0f} MB at {rows:,} ({growth:+.0%}; target within 10%"
            f"{' and under 500 MB' if dim == 512 else ''}: "
            f"{'met' if abs(growth) <= 0.10 and (dim != 512 or b < 500) else 'missed'})"
        )
    return out


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; getrusage's maxrss would carry
    over the parent's peak (here the driver, which has imported torch)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",")]

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="milvus-server,milvus-lite,qdrant-local")
    parser.add_argument("--rows", type=ints, default=[100_000, 1_000_000])
    parser.add_argument("--dims", type=ints, default=[128, 512])
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument(
        "--qdrant-max-rows", type=int, default=100_000,
        help="local mode writes ~1k points/s: larger sizes take hours",
    )  # fmt: skip
    parser.add_argument(
        "--bulk", action="store_true", help="also time --write-path bulk (Milvus server)"
    )
    parser.add_argument("--render", action="store_true", help="rewrite the doc from the JSON")
    parser.add_argument("--results", type=Path, default=RESULTS, help="raw numbers (JSON)")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page whose section is written")
    parser.add_argument(
        "--section", default="evolve", help="the section written (evolve-bulk for --bulk runs)"
    )
    parser.add_argument(
        "--settle-limit", type=float, default=SETTLE_LIMIT,
        help="most seconds to wait for an idle machine before each method (0: none)",
    )  # fmt: skip
    parser.add_argument("--worker", choices=("seed", "bulk", *METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--uri-dir", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--rows-n", dest="n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    global SETTLE_LIMIT
    opts = parse()
    SETTLE_LIMIT = opts.settle_limit
    if opts.worker:
        out = worker(opts)
        out["peak_rss_mb"] = peak_rss_mb()
        usage = resource.getrusage(resource.RUSAGE_SELF)  # the client's own CPU, not the server's
        out["cpu_s"] = usage.ru_utime + usage.ru_stime
        print(json.dumps(out))
        return
    # A stopped benchmark must still stop its Milvus server (the finally blocks above).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not opts.render:
        with tempfile.TemporaryDirectory(prefix="dmu-bench-") as tmp:
            for kind in opts.stores.split(","):
                run_store(kind, opts, Path(tmp))
    replace_section(
        opts.section, render(json.loads(opts.results.read_text()), opts.results), opts.doc
    )


if __name__ == "__main__":
    main()

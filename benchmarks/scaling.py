"""Sharded evolve with 1, 2 and 4 local workers against one unsharded run, side by side.

One source is seeded on a fresh Milvus server, then evolved by the real
command again and again, each run into a fresh target (the previous one is
dropped and the ledger restarted), after one unmeasured warm-up run:

- ``evolve`` unsharded (the baseline);
- ``evolve --shards 4 --workers K`` for K = 1, 2, 4 (the same 4 ranges each time);
- ``evolve --write-path bulk`` unsharded: the main pass as import jobs from files
  in a directory the server shares, so the store's cost per row of that path
  can be set beside the insert path's.

For each run: wall time, main-pass time, rows/s, and the CPU seconds spent
by the client processes (the command and its workers) and by the server, so
the page can say what bounds the speed-up on this machine. Writes the
"scaling" section of docs/scaling.md and benchmarks/results/scaling.json.

    python benchmarks/scaling.py                      # 1M x 128-d
    python benchmarks/scaling.py --rows 200000 --dims 128,512
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import evolve
from evolve import ALIAS, SOURCE, machine, milvus_server, seed, settle
from markdown import replace_section

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"
DOC = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"
SHARDS = 4
RUNS = (("unsharded", 0), ("shards", 1), ("shards", 2), ("shards", 4), ("bulk", 0))


def server_pid(port: int) -> int:
    """The process listening on ``port`` (the store: its CPU time is the store's share)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
            except OSError:  # a process that ended, or one we may not inspect
                continue
    raise RuntimeError(f"no process listens on port {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def reset(uri: str, target: str) -> None:
    """Drop the previous run's target and alias, so that every run writes everything."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    if client.has_collection(target):
        for alias in client.list_aliases(target)["aliases"]:
            client.drop_alias(alias)
        client.drop_collection(target)
    client.close()


def run(uri: str, artifact: str, workers: int, bulk: Path | None = None) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "dmu_migrate", "evolve", "--collection", SOURCE, "--alias", ALIAS,
        "--adapter", artifact, "--uri", uri, "--restart", "--json",
    ]  # fmt: skip
    if workers:
        cmd += ["--shards", str(SHARDS), "--workers", str(workers)]
    if bulk is not None:
        cmd += ["--write-path", "bulk", "--bulk-storage", str(bulk)]
    server = server_pid(int(uri.rsplit(":", 1)[1]))
    before_server = cpu_seconds(server)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"evolve failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    return {
        "workers": workers,
        "bulk": bulk is not None,
        "seconds": seconds,
        "main_pass_s": result["phases"]["main_pass"],
        "rows": result["rows_done"],
        "rows_per_s": result["rows_done"] / seconds,
        "main_pass_rows_per_s": result["rows_done"] / result["phases"]["main_pass"],
        # The command and its workers (children are waited for, so they count here).
        "client_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "server_cpu_s": cpu_seconds(server) - before_server,
        "phases": result["phases"],
    }


def run_case(
    rows: int, dim: int, root: Path, uri: str | None, warm_up: bool = True
) -> dict[str, Any]:
    """All runs of one size, on a fresh server (or the one at ``uri``, for smoke tests)."""
    from artifacts import make_adapter_artifact  # imports torch: only in the driver

    artifact = str(make_adapter_artifact(root / f"adapter-{dim}", dim, dim))
    case: dict[str, Any] = {"rows": rows, "dim": dim, "shards": SHARDS, "runs": []}
    server = milvus_server(root / f"server-{rows}-{dim}") if uri is None else nullcontext(uri)
    with server as uri:
        case["seed_s"] = seed(uri, rows, dim)
        settle()
        case["id_scan_ids_per_s"] = id_scan_rate(uri)
        # A first run after seeding pays for the server's compaction of the new segments:
        # one unmeasured run, so that no measured run is the first.
        if warm_up:
            reset(uri, f"{SOURCE}__v2")
            settle()
            case["warm_up"] = run(uri, artifact, 0)
        bulk_dir = root / f"bulk-{rows}-{dim}"  # the server runs here: it reads this directory
        bulk_dir.mkdir()
        for kind, workers in RUNS:
            reset(uri, f"{SOURCE}__v2")
            waited = settle()
            measured = run(uri, artifact, workers, bulk_dir if kind == "bulk" else None)
            measured["waited_s"] = waited
            case["runs"].append(measured)
            label = run_label(measured)
            print(
                f"  {rows:,} x {dim} {label}: {measured['rows_per_s']:,.0f} rows/s "
                f"(main pass {measured['main_pass_rows_per_s']:,.0f}), client CPU "
                f"{measured['client_cpu_s']:.0f} s, server CPU {measured['server_cpu_s']:.0f} s",
                flush=True,
            )
    base = case["runs"][0]
    for r in case["runs"]:
        r["speedup"] = base["seconds"] / r["seconds"]
        r["main_pass_speedup"] = base["main_pass_s"] / r["main_pass_s"]
        r["cpu_busy"] = (r["client_cpu_s"] + r["server_cpu_s"]) / r["seconds"]
    return case


def run_label(r: dict[str, Any]) -> str:
    if r.get("bulk"):
        return "unsharded, --write-path bulk"
    return f"{SHARDS} shards, {r['workers']} workers" if r["workers"] else "unsharded"


def id_scan_rate(uri: str) -> float:
    """Ids per second of one id-only scan, as the split and the id diff read them."""
    from dmu_migrate.evolve.verify import ID_BATCH
    from dmu_migrate.stores.opener import open_store

    store = open_store(uri)
    start = time.perf_counter()
    ids = sum(len(chunk) for chunk in store.iter_ids(SOURCE, ID_BATCH))
    seconds = time.perf_counter() - start
    store.close()
    return ids / seconds


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "## Measured: 1, 2 and 4 workers, and the bulk path, on one machine (`benchmarks/scaling.py`)",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['date']}. A fresh Milvus 2.3.5 server (standalone) "
        "on the same machine, FLAT index, a residual 256-hidden adapter; every run is the real "
        f"`dmu-migrate evolve` command into a fresh target, split into {SHARDS} shards for the "
        "sharded runs. Speed-up is over the unsharded run, in the same session on the same "
        "server. CPU busy = (client + server CPU seconds) / wall seconds: 2.0 is both cores "
        "saturated.",
        "",
        "| rows x dim | run | wall s | rows/s | speed-up | main pass rows/s | main-pass "
        "speed-up | client CPU s | server CPU s | CPU busy (of 2) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in results["cases"]:
        for r in case["runs"]:
            lines.append(
                f"| {case['rows']:,} x {case['dim']} | {run_label(r)} | {r['seconds']:.1f} | "
                f"{r['rows_per_s']:,.0f} | {r['speedup']:.2f} | {r['main_pass_rows_per_s']:,.0f} | "
                f"{r['main_pass_speedup']:.2f} | {r['client_cpu_s']:.0f} | "
                f"{r['server_cpu_s']:.0f} | {r['cpu_busy']:.2f} |"
            )
    lines += ["", *projection(results["cases"])]
    lines += ["", "One id-only scan of the source (what the split and the id diff read): "]
    lines[-1] += (
        ", ".join(
            f"{c['rows']:,} x {c['dim']}: {c['id_scan_ids_per_s']:,.0f} ids/s"
            for c in results["cases"]
        )
        + "."
    )
    return "\n".join(lines)


BILLION = 1_000_000_000
WORKERS = (16, 64, 256)


def projection(cases: list[dict[str, Any]]) -> list[str]:
    """A billion rows on a cluster, from the per-row CPU costs measured above.

    Per worker: rows per client CPU second of the one-process sharded run (all
    its work, imports included), i.e. a worker that has one core to itself.
    Store: server CPU seconds per row of the same run, i.e. the cores the
    cluster must add for the workers not to wait on it.
    """
    lines = [
        "### Projection: a billion rows (from the per-row costs above)",
        "",
        "| dim | worker rate, 1 core (rows/s) | store CPU per 1M rows (s) | workers | "
        "main pass | store cores to keep up | id scan for the split (1 process) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        one = next(r for r in case["runs"] if r["workers"] == 1)
        rate = one["rows"] / one["client_cpu_s"]
        store_per_row = one["server_cpu_s"] / one["rows"]
        scan_min = BILLION / case["id_scan_ids_per_s"] / 60
        for workers in WORKERS:
            minutes = BILLION / (workers * rate) / 60
            cores = workers * rate * store_per_row
            lines.append(
                f"| {case['dim']} | {rate:,.0f} | {store_per_row * 1e6:.0f} | {workers} | "
                f"{minutes:,.0f} min | {cores:,.0f} | {scan_min:,.0f} min |"
            )
    return lines + bulk_projection(cases)


def bulk_projection(cases: list[dict[str, Any]]) -> list[str]:
    """The same projection for ``--write-path bulk``, which runs in one process (unsharded).

    Client: rows per client CPU second of the bulk run (reading, the adapter, writing
    the files). Store: server CPU seconds per row of the same run (the imports, their
    sealing and the catch-up and verification reads), beside the insert path's.
    """
    runs = [(c, next((r for r in c["runs"] if r.get("bulk")), None)) for c in cases]
    runs = [(c, r) for c, r in runs if r is not None]
    if not runs:
        return []
    lines = [
        "",
        "### Projection: a billion rows through bulk import (one process)",
        "",
        "| dim | client rate, 1 core (rows/s) | store CPU per 1M rows (s), bulk / insert | "
        "a billion rows, one process | store cores to keep up |",
        "|---|---|---|---|---|",
    ]
    for case, bulk in runs:
        insert = next(r for r in case["runs"] if r["workers"] == 1 and not r.get("bulk"))
        rate = bulk["rows"] / bulk["client_cpu_s"]
        per_row = bulk["server_cpu_s"] / bulk["rows"]
        insert_per_row = insert["server_cpu_s"] / insert["rows"]
        lines.append(
            f"| {case['dim']} | {rate:,.0f} | {per_row * 1e6:.0f} / {insert_per_row * 1e6:.0f} "
            f"| {BILLION / rate / 3600:,.1f} h | {rate * per_row:,.1f} |"
        )
    return lines


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",")]

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=ints, default=[1_000_000])
    parser.add_argument("--dims", type=ints, default=[128])
    parser.add_argument("--uri", help="a running Milvus server to use instead of a fresh one")
    parser.add_argument("--render", action="store_true", help="rewrite the doc from the JSON")
    parser.add_argument("--results", type=Path, default=RESULTS, help="raw numbers (JSON)")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page whose section is written")
    parser.add_argument(
        "--settle-limit", type=float, default=evolve.SETTLE_LIMIT,
        help="most seconds to wait for an idle machine before each run (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--no-warm-up", dest="warm_up", action="store_false",
        help="skip the unmeasured first run (for smoke runs whose numbers are not read)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main() -> None:
    opts = parse()
    evolve.SETTLE_LIMIT = opts.settle_limit  # settle() reads it there
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the Milvus server
    if not opts.render:
        cases = []
        with tempfile.TemporaryDirectory(prefix="dmu-scaling-") as tmp:
            for dim in opts.dims:
                for rows in opts.rows:
                    cases.append(run_case(rows, dim, Path(tmp), opts.uri, opts.warm_up))
                    report = {"machine": machine(), "cases": cases}
                    opts.results.parent.mkdir(parents=True, exist_ok=True)
                    opts.results.write_text(json.dumps(report, indent=2) + "\n")
    replace_section("scaling", render(json.loads(opts.results.read_text())), opts.doc)


if __name__ == "__main__":
    main()

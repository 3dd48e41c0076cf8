"""Sharded evolve with 1, 2 and 4 local workers against one unsharded run, side by side.

One source is seeded on a fresh Milvus server, then evolved by the real
command again and again, each run into a fresh target (the previous one is
dropped and the ledger restarted):

- ``evolve`` unsharded (the baseline);
- ``evolve --shards 4 --workers K`` for K = 1, 2, 4 (the same 4 ranges each time).

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
from pathlib import Path
from typing import Any

from evolve import ALIAS, SOURCE, machine, milvus_server, seed, settle
from markdown import replace_section

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"
DOC = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"
SHARDS = 4
RUNS = (("unsharded", 0), ("shards", 1), ("shards", 2), ("shards", 4))


def server_pid(port: int) -> int:
    """The Milvus process listening on ``port`` (its CPU time is the store's share)."""
    from milvus import default_server

    assert default_server.server_proc is not None and default_server.listen_port == port
    return int(default_server.server_proc.pid)


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


def run(uri: str, artifact: str, workers: int) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "dmu_migrate", "evolve", "--collection", SOURCE, "--alias", ALIAS,
        "--adapter", artifact, "--uri", uri, "--restart", "--json",
    ]  # fmt: skip
    if workers:
        cmd += ["--shards", str(SHARDS), "--workers", str(workers)]
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


def run_case(rows: int, dim: int, root: Path) -> dict[str, Any]:
    from artifacts import make_adapter_artifact  # imports torch: only in the driver

    artifact = str(make_adapter_artifact(root / f"adapter-{dim}", dim, dim))
    case: dict[str, Any] = {"rows": rows, "dim": dim, "shards": SHARDS, "runs": []}
    with milvus_server(root / f"server-{rows}-{dim}") as uri:
        case["seed_s"] = seed(uri, rows, dim)
        for _, workers in RUNS:
            reset(uri, f"{SOURCE}__v2")
            waited = settle()
            measured = run(uri, artifact, workers)
            measured["waited_s"] = waited
            case["runs"].append(measured)
            label = f"--workers {workers}" if workers else "unsharded"
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


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "## Measured: 1, 2 and 4 workers on one machine (`benchmarks/scaling.py`)",
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
            label = (
                f"{case['shards']} shards, {r['workers']} workers" if r["workers"] else "unsharded"
            )
            lines.append(
                f"| {case['rows']:,} x {case['dim']} | {label} | {r['seconds']:.1f} | "
                f"{r['rows_per_s']:,.0f} | {r['speedup']:.2f} | {r['main_pass_rows_per_s']:,.0f} | "
                f"{r['main_pass_speedup']:.2f} | {r['client_cpu_s']:.0f} | "
                f"{r['server_cpu_s']:.0f} | {r['cpu_busy']:.2f} |"
            )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",")]

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=ints, default=[1_000_000])
    parser.add_argument("--dims", type=ints, default=[128])
    parser.add_argument("--render", action="store_true", help="rewrite the doc from the JSON")
    parser.add_argument("--results", type=Path, default=RESULTS, help="raw numbers (JSON)")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page whose section is written")
    return parser.parse_args(argv)


def main() -> None:
    opts = parse()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the Milvus server
    if not opts.render:
        cases = []
        with tempfile.TemporaryDirectory(prefix="dmu-scaling-") as tmp:
            for dim in opts.dims:
                for rows in opts.rows:
                    cases.append(run_case(rows, dim, Path(tmp)))
                    report = {"machine": machine(), "cases": cases}
                    opts.results.parent.mkdir(parents=True, exist_ok=True)
                    opts.results.write_text(json.dumps(report, indent=2) + "\n")
    replace_section("scaling", render(json.loads(opts.results.read_text())), opts.doc)


if __name__ == "__main__":
    main()

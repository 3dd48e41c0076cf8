"""The benchmark scripts keep working: each runs end to end at a toy size.

Their numbers are not asserted (tests never assert wall-clock times); what is
checked is that every measurement is taken, recorded and rendered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_evolve_benchmark_measures_every_method_on_embedded_stores(tmp_path: Path) -> None:
    results, doc = tmp_path / "evolve.json", tmp_path / "benchmarks.md"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "evolve.py"),
        "--stores", "milvus-lite,qdrant-local", "--rows", "3000", "--dims", "16",
        "--results", str(results), "--doc", str(doc),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    cases = json.loads(results.read_text())["cases"]
    assert {c["store"] for c in cases} == {"milvus-lite", "qdrant-local"}
    for case in cases:
        for method in ("raw", "naive", "evolve"):
            assert case[method]["rows_per_s"] > 0 and case[method]["peak_rss_mb"] > 50
        assert case["evolve"]["rows_done"] == 3000
        assert case["evolve"]["phases"]["main_pass"] > 0
    text = doc.read_text()
    assert "<!-- evolve:start -->" in text and "| milvus-lite | 3,000 x 16 |" in text
    assert "evolve >= 0.85 x raw copy" in text


def test_adapter_benchmark_runs_one_size() -> None:
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "adapter.py"),
        "--reps", "2", "--sizes", "1", "--no-write",
    ]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    assert "rows/s" in done.stdout and "Target" in done.stdout


def test_scaling_benchmark_measures_each_worker_count(milvus_server: str, tmp_path: Path) -> None:
    from backends import Backend

    server = Backend("milvus-server", milvus_server, tmp_path)
    before = server.list_collections()
    results, doc = tmp_path / "scaling.json", tmp_path / "scaling.md"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--uri", milvus_server,
        "--rows", "2000", "--dims", "16", "--results", str(results), "--doc", str(doc),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    finally:
        server.drop_created(server.created_since(before))
    (case,) = json.loads(results.read_text())["cases"]
    assert [r["workers"] for r in case["runs"]] == [0, 1, 2, 4]
    for run in case["runs"]:
        assert run["rows"] == 2000 and run["client_cpu_s"] > 0 and run["server_cpu_s"] > 0
    assert case["id_scan_ids_per_s"] > 0
    text = doc.read_text()
    assert "<!-- scaling:start -->" in text and "4 shards, 2 workers" in text
    assert "a billion rows" in text

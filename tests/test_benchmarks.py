"""The benchmark scripts keep working: each runs end to end at a toy size.

Their numbers are not asserted (tests never assert wall-clock times); what is
checked is that every measurement is taken, recorded and rendered.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dmu_migrate.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
# Each benchmark script runs end to end in its own process (one on the Milvus server).
pytestmark = pytest.mark.integration


def test_evolve_benchmark_measures_every_method_on_embedded_stores(tmp_path: Path) -> None:
    results, doc = tmp_path / "evolve.json", tmp_path / "benchmarks.md"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "evolve.py"),
        "--stores", "milvus-lite,qdrant-local", "--rows", "1000", "--dims", "16",
        "--results", str(results), "--doc", str(doc), "--settle-limit", "0",
    ]  # fmt: skip
    # No wait for an idle machine (the numbers are not read), and a toy size: 30 s on an
    # idle machine. The limit leaves room for a loaded one.
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=850)
    cases = json.loads(results.read_text())["cases"]
    assert {c["store"] for c in cases} == {"milvus-lite", "qdrant-local"}
    for case in cases:
        for method in ("raw", "naive", "evolve"):
            assert case[method]["rows_per_s"] > 0 and case[method]["peak_rss_mb"] > 50
        assert case["evolve"]["rows_done"] == 1000
        assert case["evolve"]["phases"]["main_pass"] > 0
    text = doc.read_text()
    assert "<!-- evolve:start -->" in text and "| milvus-lite | 1,000 x 16 |" in text
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
        "--rows", "1000", "--dims", "16", "--results", str(results), "--doc", str(doc),
        # No wait for an idle machine, no unmeasured first run: the numbers are not read.
        "--settle-limit", "0", "--no-warm-up",
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    finally:
        server.drop_created(server.created_since(before))
    (case,) = json.loads(results.read_text())["cases"]
    assert [(r["workers"], r["bulk"]) for r in case["runs"]] == [
        (0, False), (1, False), (2, False), (4, False), (0, True),
    ]  # fmt: skip
    for run in case["runs"]:
        assert run["rows"] == 1000 and run["client_cpu_s"] > 0 and run["server_cpu_s"] > 0
    assert case["id_scan_ids_per_s"] > 0
    text = doc.read_text()
    assert "<!-- scaling:start -->" in text and "4 shards, 2 workers" in text
    assert "a billion rows" in text and "unsharded, --write-path bulk" in text
    assert "a billion rows through bulk import" in text


# Toy stand-ins for the examples' prepared tables, so that compat.py and sweep.py
# never run an example's prepare.py here: x is 64 values (an 8x8 image for the
# fashion_mnist plug-in CNN), old a weaker 16-d view of the same identities.
TOY_IDENTITIES = {"train": 60, "val": 20, "eval": 20}  # 50+ train identities: held out whole


def write_toy_tables(data: Path, examples: list[str]) -> None:
    from dmu_migrate.data import write_table

    rng = np.random.default_rng(0)
    projection = rng.normal(size=(64, 16)).astype(np.float32)
    first = 0
    for split, count in TOY_IDENTITIES.items():
        labels = np.repeat(np.arange(first, first + count), 4)
        first += count
        centers = rng.normal(size=(first, 64)).astype(np.float32)[labels]
        x = centers + 0.6 * rng.normal(size=centers.shape).astype(np.float32)
        old = x @ projection + 8.0 * rng.normal(size=(len(x), 16)).astype(np.float32)
        columns: dict[str, np.ndarray] = {"label": labels, "x": x, "old": old}
        if split != "train":
            is_query = np.arange(len(labels)) % 4 == 0
            columns["role"] = np.where(is_query, "query", "gallery").astype(object)
        for example in examples:
            (data / example).mkdir(parents=True, exist_ok=True)
            write_table(data / example / f"{split}.parquet", columns)


def test_compat_benchmark_and_report_render_every_target_and_the_fused_column(
    tmp_path: Path,
) -> None:
    examples = ["wordnet_text", "fashion_mnist", "glyphs"]
    write_toy_tables(tmp_path / "data", examples)
    raw, docs = tmp_path / "compat.json", tmp_path / "docs"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "compat.py"), "--examples", *examples,
        "--seeds", "0", "--data", str(tmp_path / "data"), "--work", str(tmp_path / "work"),
        "--raw", str(raw), "--set", "epochs=2",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    rows = json.loads(raw.read_text())["rows"]
    methods = {
        "independent", "bct", "dmu", "dmu joint", "dmu gamma=0", "dmu beta=0", "dmu lambda_b=0",
        "adapter procrustes", "adapter affine", "adapter mlp",
    }  # fmt: skip
    for example in examples:
        mine = {r["method"]: r for r in rows if r["example"] == example}
        assert set(mine) == methods
        # Trained with the defaults: only the plug-in model (and the toy epochs) is set.
        default_model = TrainConfig().model
        assert mine["dmu"]["config"]["model"] == (
            "nets:cnn" if example == "fashion_mnist" else default_model
        )
        assert mine["dmu joint"]["config"]["joint"] is True
        assert mine["dmu lambda_b=0"]["config"]["lambda_b"] == 0.0
        # The gate's validated figures travel with each row, and fused is scored with them.
        assert "new->evolved" in mine["dmu"]["quality"]["settings"]
        assert "fused" in mine["dmu"]["settings"]

    # --reuse evaluates the artifacts already trained with the same config, untrained again.
    again = tmp_path / "again.json"
    reuse = [*cmd[: cmd.index("--raw")], "--raw", str(again), "--set", "epochs=2", "--reuse"]
    subprocess.run(reuse, check=True, capture_output=True, text=True, timeout=900)
    reused = json.loads(again.read_text())["rows"]
    assert len(reused) == len(rows) and all(r["train_seconds"] is None for r in reused)
    for first, second in zip(rows, reused, strict=True):
        assert first["settings"]["new->evolved"] == second["settings"]["new->evolved"]

    notes = tmp_path / "notes.md"
    notes.write_text("A note on how the settings were chosen.\n")
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "report.py"), str(again),
        "--docs", str(docs), "--notes", str(notes),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    page = (docs / "results.md").read_text()
    assert "| method | old->old | new->old | new->evolved | new->mixed | new->new | fused |" in page
    assert "## CJK glyphs: EfficientNet-Lite0 features" in page
    for target in (
        "floor: DMU new->evolved",
        "of the independent model's new->new",
        "of independent (target >= 98%)",
        "vs every post-hoc adapter's",
        "transition: DMU fused",
    ):
        lines = [line for line in page.splitlines() if target in line]
        assert len(lines) == len(examples), target
        assert all(line.startswith(("- **met**", "- **MISSED**")) for line in lines), lines
    assert page.count("information (not a target): DMU new->old") == len(examples)
    assert page.count("### Quality gate") == len(examples)
    gate = [line for line in page.splitlines() if line.startswith("| dmu |") and "deploy" in line]
    assert len(gate) == len(examples)
    adapter = [line for line in page.splitlines() if line.startswith("| adapter procrustes |")]
    assert adapter and all(line.count("|") == 8 for line in adapter[:1])
    assert "## Notes" in page and "A note on how the settings were chosen." in page
    assert page.count("Training time: not measured (the artifacts were reused") == len(examples)
    for example in examples:
        assert (docs / f"results_{example}.png").stat().st_size > 0


def test_sweep_compares_the_default_with_a_small_grid_on_val(tmp_path: Path) -> None:
    examples = ["wordnet_text", "fashion_mnist"]
    write_toy_tables(tmp_path / "data", examples)
    raw, doc = tmp_path / "sweep.json", tmp_path / "method.md"
    doc.write_text("# The method\n\nHand-written text that must survive.\n")
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--examples", *examples,
        "--data", str(tmp_path / "data"), "--work", str(tmp_path / "work"),
        "--raw", str(raw), "--doc", str(doc), "--set", "epochs=2",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    payload = json.loads(raw.read_text())
    assert payload["split"] == "val"
    rows = payload["rows"]
    text = {r["label"] for r in rows if r["example"] == "wordnet_text"}
    s = f"{TrainConfig().scale:g}"  # the grid is centred on the default scale
    grid = {f"model={m} scale={s} dropout={d}" for m in ("linear", "mlp") for d in (0.2, 0.5)}
    grid |= {"model=mlp scale=16 dropout=0.2", "model=mlp scale=30 dropout=0.2"}
    assert grid <= text and len(text - grid) <= 1  # plus "default" when it is off the grid
    assert {r["label"] for r in rows if r["example"] == "fashion_mnist"} == {
        f"scale={x:g}" for x in {16.0, 30.0, TrainConfig().scale}
    }
    for example in examples:
        (default,) = [r for r in rows if r["example"] == example and r["default"]]
        assert 0.0 <= default["new->new R@1"] <= 1.0
    (default,) = [r for r in rows if r["example"] == "wordnet_text" and r["default"]]
    d = TrainConfig()
    on_grid = f"model={d.model} scale={d.scale:g} dropout={d.dropout:g}"
    assert default["label"] == (on_grid if on_grid in grid else "default")
    page = doc.read_text()
    assert page.startswith("# The method\n\nHand-written text that must survive.")
    assert "<!-- sweep:start -->" in page and page.rstrip().endswith("<!-- sweep:end -->")
    assert f"| {default['label']} (default" in page
    lines = [line for line in page.splitlines() if "default within 1 point of the best" in line]
    assert len(lines) == len(examples)
    assert all(line.startswith(("- **met**", "- **MISSED**")) for line in lines)


def _glyph_variants(monkeypatch: Any) -> Any:
    """benchmarks/glyph_variants.py as a module (it imports its siblings by name)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("glyph_variants")


def _variant_row(label: str, old: float, evolved: float, validated: str) -> dict[str, Any]:
    r1 = {"old->old": old, "new->old": old, "new->evolved": evolved, "new->new": 0.6}
    test = "deploy" if evolved >= old else "do not deploy"
    return {
        "variant": label, "prepare": {}, "queries": 100, "gallery": 500, "R@1": r1,
        "independent new->new R@1": 0.5, "validated": f"{validated}: figures",
        "test": f"{test}: figures", "seconds": 60.0,
    }  # fmt: skip


def test_glyph_variants_section_counts_the_floor_and_the_verdicts_that_agree(
    monkeypatch: Any, tmp_path: Path
) -> None:
    variants = _glyph_variants(monkeypatch)
    rows = [
        _variant_row("strong old", 0.40, 0.39, "deploy"),  # the gate was wrong here
        _variant_row("as shipped", 0.40, 0.45, "deploy"),
        _variant_row("small", 0.30, 0.35, "do not deploy"),
    ]
    text = variants.section(rows, "python benchmarks/glyph_variants.py")
    assert "floor (new->evolved > old->old) held on 2 of 3 variants" in text
    assert "smallest margin is -1.0 points (strong old)" in text
    assert "agreed with the test table's on 1 of 3" in text
    assert (
        "| as shipped | 100 | 40.0 | 40.0 | 45.0 | - | 60.0 | 50.0 | 90% | deploy | deploy |"
        in text
    )
    assert "Wall time: 3.0 min in all" in text
    # A variant whose row is on disk is read back, not prepared and trained again.
    label, args = "4 renderings per ideograph", {"renderings": 4}
    (tmp_path / "renderings4").mkdir()
    (tmp_path / "renderings4" / "row.json").write_text(json.dumps(rows[1]))
    assert variants.run_variant(label, args, tmp_path) == rows[1]
    assert not (tmp_path / "renderings4" / "data").exists()

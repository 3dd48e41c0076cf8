"""plan-backfill and backfill on real stores: the ranking, budgets, native writes, bad
inputs, resume after a failure or a SIGKILL, and the cron evolve run afterwards.

Data: the digits gallery of galleries.seed_gallery (old-model vectors),
the artifact trained on the digits (its backfill_score.onnx and new_model.onnx), and
as native vectors the new model's embeddings of the same digits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import backfill_embed
import numpy as np
import pyarrow.parquet as pq
import pytest
from backends import Backend
from galleries import ROWS, Digits, Gallery, read_all, seed_gallery
from helpers import Phases, assert_clean_error
from migrations import run
from typer.testing import CliRunner, Result

from dmu_migrate.artifact import BACKFILL_SCORE, Artifact, load_artifact, write_manifest
from dmu_migrate.backfill_curve import order_by_score
from dmu_migrate.cli import app
from dmu_migrate.data import write_table
from dmu_migrate.errors import InputError
from dmu_migrate.evolve.backfill_input import EmbedCall, VectorTable
from dmu_migrate.evolve.backfill_plan import Budget, TopScores, parse_budget, plan_backfill
from dmu_migrate.evolve.backfill_write import backfill
from dmu_migrate.evolve.ledger import Ledger
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.progress import BACKFILL, INPUT_CHECK, NATIVE_IDS, SCORE
from dmu_migrate.evolve.strategies import make_strategy
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.evolve.verify import Reservoir, verify
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.stores.base import Batch

pytestmark = pytest.mark.timeout(600)
runner = CliRunner()
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PLANNED = round(0.1 * ROWS)  # --budget 10% of the gallery


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def stored_scores(backend: Backend, source: str, artifact: Artifact) -> tuple[np.ndarray, Any]:
    """(ids in key order, the score model's output on the vectors as the store holds them)."""
    rows = backend.read_all(source)
    ids = np.asarray(sorted(rows))
    vectors = np.asarray([rows[i][backend.vector_name] for i in ids.tolist()], np.float32)
    assert artifact.backfill_score_path is not None
    return ids, OnnxModel(artifact.backfill_score_path)(vectors)[:, 0]


def new_vectors(digits: Digits, artifact: Artifact) -> np.ndarray:
    """The new model's embedding of each gallery row (seed_gallery's rows are the first ROWS)."""
    assert artifact.new_model_path is not None
    return OnnxModel(artifact.new_model_path)(digits.x_te[:ROWS])


def test_top_scores_keeps_the_best_in_stream_order_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 50, 5000).astype(np.float32)  # many ties
    ids = np.arange(5000) * 3
    for keep in (None, 1, 1500, 5000):
        top = TopScores(keep)
        for start in range(0, 5000, 100):
            top.add(ids[start : start + 100], scores[start : start + 100])
        got_ids, got_scores = top.result()
        order = order_by_score(scores)[: keep or 5000]
        assert got_ids.tolist() == ids[order].tolist()
        np.testing.assert_array_equal(got_scores, scores[order])


def test_backfill_path_does_not_import_torch() -> None:
    """plan-backfill and backfill run in the cron image, which has no torch."""
    code = (
        "import sys, dmu_migrate.cli.backfill, dmu_migrate.evolve.backfill_plan, "
        "dmu_migrate.evolve.backfill_write, dmu_migrate.evolve.backfill_input; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_budget_parsing() -> None:
    assert parse_budget("10%") == Budget(share=0.1)
    assert parse_budget(" 2.5 % ") == Budget(share=0.025)
    assert parse_budget("500") == Budget(rows=500)
    assert Budget(share=0.1).of(120) == 12 and Budget(rows=500).of(120) == 120
    for bad in ("0%", "101%", "abc", "1.5", "0", "-3"):
        with pytest.raises(InputError, match="--budget"):
            parse_budget(bad)


def test_plan_ranks_by_the_score_model_and_keeps_the_budget(
    backend: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    source, alias, _ = seed_gallery(backend, digits)
    ids, scores = stored_scores(backend, source, artifact)
    order = order_by_score(scores)
    store = backend.open_store()

    # Before any migration: the collection named is the one scored.
    plain = plan_backfill(store, source, artifact, batch_size=32)
    assert plain.migration is None and plain.rows_scored == ROWS
    assert plain.ids.tolist() == ids[order].tolist()
    np.testing.assert_array_equal(plain.scores, scores[order])

    first = run(store, alias, [artifact])
    # Through the alias (now on the evolved collection) the old vectors are still scored.
    ranked = plan_backfill(store, alias, artifact, batch_size=32)
    assert (ranked.collection, ranked.migration) == (source, first.migration)
    assert ranked.ids.tolist() == ids[order].tolist()
    np.testing.assert_array_equal(ranked.scores, scores[order])

    share = plan_backfill(store, alias, artifact, parse_budget("10%"), batch_size=32)
    assert share.ids.tolist() == ids[order[:PLANNED]].tolist()
    limited = plan_backfill(store, alias, artifact, parse_budget("7"), limit=5)
    assert limited.ids.tolist() == ids[order[:5]].tolist()

    path = share.write(tmp_path / "plan.parquet")
    table = pq.read_table(path).to_pydict()
    assert table["rank"] == list(range(1, PLANNED + 1))
    assert table["id"] == share.ids.tolist()
    np.testing.assert_array_equal(np.asarray(table["score"], np.float32), share.scores)


def test_plan_and_backfill_report_each_phase(
    backend: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    source, alias, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    before = Phases()
    plan_backfill(store, source, artifact, batch_size=32, report=before)
    assert before.check(SCORE) == {SCORE: ROWS}  # no migration yet: no native rows to read
    assert before.calls[SCORE][0] == (0, ROWS)  # shown before the first batch, with its total
    assert len(before.calls[SCORE]) > 3  # one report per batch of 32

    run(store, alias, [artifact])
    heard = Phases()
    plan = plan_backfill(store, alias, artifact, parse_budget("10%"), batch_size=32, report=heard)
    assert heard.check(NATIVE_IDS, SCORE) == {NATIVE_IDS: 0, SCORE: ROWS}
    plan_path = plan.write(tmp_path / "plan.parquet")
    write_table(tmp_path / "native.parquet", {"id": ids, "vector": new_vectors(digits, artifact)})

    wrote = Phases()
    table = VectorTable(tmp_path / "native.parquet", only=plan_path)
    backfill(store, alias, table, batch_size=5, report=wrote)
    assert wrote.check(INPUT_CHECK, BACKFILL) == {INPUT_CHECK: PLANNED, BACKFILL: PLANNED}
    written = [d for d, _ in wrote.calls[BACKFILL]]
    # Shown at 0 before the first write, then after each verified batch (the file's batches
    # of 5 rows hold a few planned ones each).
    assert written[0] == 0 and written[-1] == PLANNED and len(set(written)) > 3, written

    again = Phases()
    backfill(store, alias, VectorTable(tmp_path / "native.parquet", only=plan_path), report=again)
    assert again.check(INPUT_CHECK, BACKFILL) == {
        INPUT_CHECK: PLANNED,
        BACKFILL: PLANNED,
    }  # written before: at once

    after = Phases()
    plan_backfill(store, alias, artifact, batch_size=32, report=after)
    # The native rows are read from the evolved collection, then read and skipped in the scan.
    assert after.check(NATIVE_IDS, SCORE) == {NATIVE_IDS: PLANNED, SCORE: ROWS}


def test_the_commands_log_each_phase_off_a_terminal(
    gallery: Gallery, artifact: Artifact, digits: Digits, tmp_path: Path
) -> None:
    db, rows = str(gallery.db), len(gallery.ids)
    evolved = cli("evolve", "--collection", "digits", "--adapter", str(artifact.path), "--uri", db)
    assert evolved.exit_code == 0, evolved.output
    plan_path = tmp_path / "plan.parquet"
    planned = cli(
        "plan-backfill", "--collection", "digits", "--adapter", str(artifact.path), "--uri", db,
        "--budget", "10", "--output", str(plan_path), "-v",
    )  # fmt: skip
    assert planned.exit_code == 0, planned.output
    lines = [x for x in planned.stderr.splitlines() if "dmu_migrate.progress: " in x]
    assert lines[0].endswith("native ids: 0/0 ids"), planned.stderr
    assert f"score: {rows:,}/{rows:,} rows" in lines[-1], planned.stderr

    native = tmp_path / "native.parquet"
    dim = artifact.manifest.new_dim
    write_table(native, {"id": gallery.ids, "vector": np.ones((rows, dim), np.float32) / dim})
    args = ["--collection", "digits", "--uri", db, "--input", str(native), "--ids", str(plan_path)]
    done = cli("backfill", *args, "--batch-size", "3", "-v")
    assert done.exit_code == 0, done.output
    lines = [x for x in done.stderr.splitlines() if "dmu_migrate.progress: " in x]
    assert lines[0].endswith("input check: 0/10 rows"), done.stderr
    assert "backfill: 10/10 rows" in lines[-1], done.stderr  # the last one is always logged


def test_backfill_writes_native_rows_that_cron_evolve_keeps_and_verify_accepts(
    backend: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    source, alias, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    first = run(store, alias, [artifact])
    plan = plan_backfill(store, alias, artifact, parse_budget("10%"))
    plan_path = plan.write(tmp_path / "plan.parquet")
    native = new_vectors(digits, artifact)
    write_table(tmp_path / "native.parquet", {"id": ids, "vector": native})
    before = backend.read_all(first.target)

    table = VectorTable(tmp_path / "native.parquet", only=plan_path)
    result = backfill(store, alias, table, batch_size=5)
    assert (result.rows_written, result.rows_total, result.resumed) == (PLANNED, PLANNED, False)
    chosen = set(plan.ids.tolist())
    after = backend.read_all(first.target)
    vec = backend.vector_name
    for k, row_id in enumerate(ids.tolist()):
        if row_id in chosen:
            np.testing.assert_allclose(after[row_id][vec], native[k], atol=1e-6)
            assert (after[row_id]["dmu_origin"], after[row_id]["dmu_version"]) == ("native", "v2")
            assert after[row_id]["name"] == before[row_id]["name"]
        else:  # rows it was not given are exactly as evolve left them
            np.testing.assert_array_equal(after[row_id][vec], before[row_id][vec])
            assert {k: v for k, v in after[row_id].items() if k != vec} == {
                k: v for k, v in before[row_id].items() if k != vec
            }
    record = Ledger(store).load(first.migration)
    assert record is not None and record.backfill is not None
    assert (record.backfill["status"], record.backfill["rows_done"]) == ("done", PLANNED)
    assert record.lease_owner is None and "backfilled_at" in record.runs[-1]

    # The same input again writes nothing; a new plan leaves the native rows out.
    again = backfill(store, alias, VectorTable(tmp_path / "native.parquet", only=plan_path))
    assert again.up_to_date and again.rows_written == 0
    rest = plan_backfill(store, alias, artifact)
    assert rest.native_left_out == PLANNED and not chosen & set(rest.ids.tolist())

    # Cron: the source changes under a native row and gains a row; evolve runs again.
    info = store.describe(source)
    changed = plan.ids[:1]
    fresh = digits.old_te[300:302]
    store.write_rows(
        info,
        source,
        Batch(np.asarray([changed[0], 1]), fresh, {"label": [1, 2], "name": ["c", "i"]}),
        {},
    )
    store.flush(source)
    cron = run(store, alias, [artifact])
    assert (cron.caught_up, cron.updated, cron.deleted, cron.native) == (1, 0, 0, PLANNED)
    kept = backend.read_all(first.target)
    for k, row_id in enumerate(ids.tolist()):
        if row_id in chosen:
            np.testing.assert_allclose(kept[row_id][vec], native[k], atol=1e-6)
            assert kept[row_id]["dmu_origin"] == "native"
    chain = AdapterChain([artifact])
    plan_now = make_plan(store, alias, chain)
    sample = Reservoir(256)
    for chunk in store.iter_ids(source, 1000):
        sample.add(chunk)
    report = verify(store, plan_now, make_strategy(store, plan_now, tmp_path), sample.ids())
    assert report.missing == 0 and report.sampled == ROWS + 1 - PLANNED


def test_a_failed_run_resumes_after_its_last_acknowledged_batch(
    backend: Backend,
    digits: Digits,
    artifact: Artifact,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, alias, ids = seed_gallery(backend, digits)
    store = backend.open_store()
    first = run(store, alias, [artifact])
    plan = plan_backfill(store, alias, artifact, parse_budget("10%"))
    plan_path = plan.write(tmp_path / "plan.parquet")
    write_table(tmp_path / "x.parquet", {"id": ids, "x": digits.x_te[:ROWS]})
    assert artifact.new_model_path is not None
    monkeypatch.setenv("DMU_TEST_X", str(tmp_path / "x.parquet"))
    monkeypatch.setenv("DMU_TEST_MODEL", str(artifact.new_model_path))
    monkeypatch.setenv("DMU_TEST_FAIL_AT", "3")
    backfill_embed.CALLS.clear()
    before = backend.read_all(first.target)

    call = EmbedCall("backfill_embed:embed", plan_path)
    with pytest.raises(InputError, match="embedding service is down"):
        backfill(store, alias, call, batch_size=4)
    record = Ledger(store).load(first.migration)
    assert record is not None and record.backfill is not None
    assert (record.backfill["status"], record.backfill["rows_done"]) == ("running", 8)
    assert record.lease_owner is None  # released on the way out
    half = backend.read_all(first.target)
    planned = plan.ids.tolist()
    assert {i for i, r in half.items() if r["dmu_origin"] == "native"} == set(planned[:8])
    assert backfill_embed.NAMES[0] == [before[i]["name"] for i in planned[:4]]

    monkeypatch.delenv("DMU_TEST_FAIL_AT")
    backfill_embed.CALLS.clear()
    resumed = backfill(store, alias, EmbedCall("backfill_embed:embed", plan_path), batch_size=4)
    assert (resumed.resumed, resumed.rows_written, resumed.rows_done) == (True, 4, PLANNED)
    assert [i for call in backfill_embed.CALLS for i in call] == planned[8:]
    native = new_vectors(digits, artifact)
    done = backend.read_all(first.target)
    position = {i: k for k, i in enumerate(ids.tolist())}
    for row_id in planned:
        np.testing.assert_allclose(
            done[row_id][backend.vector_name], native[position[row_id]], atol=1e-6
        )
        assert done[row_id]["dmu_origin"] == "native"
    assert sum(r["dmu_origin"] == "native" for r in done.values()) == PLANNED


def test_bad_inputs_are_one_line_and_write_nothing(
    gallery: Gallery, artifact: Artifact, digits: Digits, tmp_path: Path
) -> None:
    db, ids = str(gallery.db), gallery.ids
    good = tmp_path / "good.parquet"
    dim = artifact.manifest.new_dim
    vectors = np.ones((3, dim), np.float32) / np.sqrt(dim)
    write_table(good, {"id": ids[:3], "vector": vectors})
    early = cli("backfill", "--collection", "digits", "--uri", db, "--input", str(good))
    assert_clean_error(early, 2, "no new-collection migration of 'digits'", "run evolve first")

    evolved = cli("evolve", "--collection", "digits", "--adapter", str(artifact.path), "--uri", db)
    assert evolved.exit_code == 0, evolved.output
    before = read_all(gallery.db, "digits__v2")

    bare = tmp_path / "old-artifact"
    shutil.copytree(artifact.path, bare)
    (bare / BACKFILL_SCORE).unlink()
    write_manifest(bare, load_artifact(artifact.path).manifest)
    plan_args = ["plan-backfill", "--collection", "digits", "--uri", db]
    assert_clean_error(
        cli(*plan_args, "--adapter", str(bare)),
        3,
        f"artifact '{bare}' has no {BACKFILL_SCORE}",
        "re-train",
    )
    assert_clean_error(
        cli(*plan_args, "--adapter", str(artifact.path), "--budget", "ten"), 2, "--budget"
    )

    def table(name: str, rows: np.ndarray, vecs: np.ndarray) -> str:
        write_table(tmp_path / name, {"id": rows, "vector": vecs})
        return str(tmp_path / name)

    nan = vectors.copy()
    nan[1, 0] = np.nan
    cases: list[tuple[list[str], int, str]] = [
        (["--input", table("unknown.parquet", np.asarray([ids[0], 999_999]), vectors[:2])], 2,
         "names ids that are not rows of 'digits__v2'"),
        (["--input", table("dim.parquet", ids[:3], np.ones((3, 5), np.float32))], 2,
         f"gives id {ids[0]} a 5-d vector but the evolved collection holds {dim}-d vectors"),
        (["--input", table("nan.parquet", ids[:3], nan)], 2, "NaN or inf"),
        (["--input", table("twice.parquet", ids[[0, 1, 0]], vectors)], 2, "more than once"),
        (["--input", str(good), "--vector-column", "emb"], 2, "has no column 'emb'"),
        (["--input", str(tmp_path / "none.parquet")], 2, "does not exist"),
        (["--embed", "no_such_module:embed", "--ids", str(good)], 2, "cannot import 'no_such_module'"),
        (["--embed", "backfill_embed:VALUE", "--ids", str(good)], 2, "has no callable 'VALUE'"),
        (["--embed", "backfill_embed", "--ids", str(good)], 2, "is not 'package.module:function'"),
        (["--embed", "backfill_embed:embed"], 2, "--embed needs --ids"),
        (["--input", str(good), "--embed", "backfill_embed:embed"], 2, "not both"),
    ]  # fmt: skip
    for args, code, needle in cases:
        result = cli("backfill", "--collection", "digits", "--uri", db, *args)
        assert_clean_error(result, code, needle)

    assert read_all(gallery.db, "digits__v2") == before  # nothing was written
    status = json.loads(cli("status", "--uri", db, "--json").output)
    assert status[0]["backfill"] is None and status[0]["lease_owner"] is None


@pytest.mark.integration  # a killed process
@pytest.mark.parametrize("kind", ["parquet", "milvus-server"])
def test_a_killed_backfill_resumes_with_take_over(
    kind: str,
    request: pytest.FixtureRequest,
    digits: Digits,
    artifact: Artifact,
    tmp_path: Path,
) -> None:
    """SIGKILL inside the run (the third batch's embedding); stores other processes can open."""
    uri = (
        request.getfixturevalue("milvus_server")
        if kind == "milvus-server"
        else f"parquet:{tmp_path / 'parquet'}"
    )
    harness = Backend(kind, uri, tmp_path)
    existing = harness.list_collections() if kind == "milvus-server" else set()
    try:
        _killed_backfill_resumes(harness, digits, artifact, tmp_path)
    finally:
        harness.close_stores()
        if kind == "milvus-server":
            harness.drop_created(harness.created_since(existing))


def _killed_backfill_resumes(
    harness: Backend, digits: Digits, artifact: Artifact, tmp_path: Path
) -> None:
    source, alias, ids = seed_gallery(harness, digits)
    store = harness.open_store()
    first = run(store, alias, [artifact])
    plan_path = plan_backfill(store, alias, artifact, parse_budget("10%")).write(
        tmp_path / "plan.parquet"
    )
    planned = pq.read_table(plan_path).column("id").to_pylist()
    harness.close_stores()
    write_table(tmp_path / "x.parquet", {"id": ids, "x": digits.x_te[:ROWS]})
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "DMU_TEST_X": str(tmp_path / "x.parquet"),
        "DMU_TEST_MODEL": str(artifact.new_model_path),
    }
    args = [
        sys.executable, "-m", "dmu_migrate", "backfill", "--collection", alias, "--uri",
        harness.uri, "--embed", "backfill_embed:embed", "--ids", str(plan_path),
        "--batch-size", "4", "--json",
    ]  # fmt: skip

    def child(*more: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, *more], capture_output=True, text=True, env={**env, **extra}, timeout=300
        )

    killed = child(DMU_TEST_FAIL_AT="3", DMU_TEST_FAULT="kill")
    assert killed.returncode == -9, killed.stderr
    store = harness.open_store()
    record = Ledger(store).load(first.migration)
    assert record is not None and record.backfill is not None
    assert (record.backfill["status"], record.backfill["rows_done"]) == ("running", 8)
    assert record.lease_owner is not None  # the dead run still holds it
    harness.close_stores()

    refused = child()
    assert refused.returncode == 4 and "--take-over" in refused.stderr, refused.stderr
    resumed = child("--take-over")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert (report["resumed"], report["rows_written"], report["rows_done"]) == (True, 4, PLANNED)

    native = new_vectors(digits, artifact)
    position = {i: k for k, i in enumerate(ids.tolist())}
    rows = harness.read_all(first.target)
    for row_id in planned:
        np.testing.assert_allclose(rows[row_id]["vector"], native[position[row_id]], atol=1e-6)
    assert sorted(i for i, r in rows.items() if r["dmu_origin"] == "native") == sorted(planned)
    verified = subprocess.run(
        [sys.executable, "-m", "dmu_migrate", "verify", "--collection", source, "--alias", alias,
         "--adapter", str(artifact.path), "--uri", harness.uri],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    history = subprocess.run(
        [sys.executable, "-m", "dmu_migrate", "history", "--uri", harness.uri],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    # history folds long lines to the terminal's width (80 columns off a terminal).
    shown = " ".join(history.stdout.split())
    assert f"backfilled {PLANNED} native rows from backfill_embed:embed on" in shown

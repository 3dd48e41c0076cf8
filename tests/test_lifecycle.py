"""A migration's life on real stores: the application keeps writing, cron keeps running."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from galleries import Gallery, read_all
from helpers import assert_clean_error
from migrations import evolve_args, verify_args
from pymilvus import MilvusClient
from typer.testing import CliRunner, Result

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.onnx_model import OnnxModel

pytestmark = pytest.mark.timeout(600)
runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def test_rerun_propagates_deletes_updates_and_inserts_and_leaves_native_rows(
    gallery: Gallery, artifact: Artifact
) -> None:
    first = cli(*evolve_args(gallery, artifact))
    assert first.exit_code == 0, first.output
    ids = gallery.ids.tolist()
    deleted, updated = ids[:10], ids[10:20]
    inserted = [5000 + k for k in range(5)]
    rng = np.random.default_rng(7)
    fresh = rng.normal(size=(15, gallery.vectors.shape[1])).astype(np.float32)
    target = read_all(gallery.db, "digits__v2")
    out_dim = len(target[ids[0]]["vector"])
    native_vectors = rng.normal(size=(2, out_dim)).astype(np.float32)
    shared_native, new_native = ids[30], 9000  # one shares its id with a source row

    client = MilvusClient(str(gallery.db))
    try:
        client.delete("digits__v1", ids=deleted)
        rows = [
            {"id": i, "vector": v, "label": 1, "name": f"new-{i}"}
            for i, v in zip(updated + inserted, fresh, strict=True)
        ]
        client.upsert("digits__v1", rows)
        # The application writes new-model vectors through the alias after cut-over.
        native = [
            {
                "id": i,
                "vector": v,
                "label": 2,
                "name": "native",
                "dmu_version": "v2",
                "dmu_from": "",
                "dmu_origin": "native",
                "dmu_src": "",
            }
            for i, v in zip([shared_native, new_native], native_vectors, strict=True)
        ]
        client.upsert("digits", native)
        client.flush("digits__v1")
        client.flush("digits__v2")
    finally:
        client.close()

    stale = cli(*verify_args(gallery, artifact))
    assert_clean_error(stale, 5, "are no longer in 'digits__v1'")

    again = cli(*evolve_args(gallery, artifact))
    assert again.exit_code == 0, again.output
    flat = " ".join(again.output.split())  # the console wraps long lines
    assert "5 rows added, 10 evolved again (source vector changed), 10 deleted" in flat
    # The summary above it agrees: no main pass ran, not "wrote 0 rows this run".
    assert "wrote 0 rows" not in flat
    assert "main pass done by an earlier run; this run brought the target in step" in flat
    assert "2 rows written by the application left as they are" in flat

    after = read_all(gallery.db, "digits__v2")
    assert not set(deleted) & set(after)
    adapter = OnnxModel(artifact.adapter_path)
    expected = adapter(fresh)
    for k, i in enumerate(updated + inserted):
        np.testing.assert_allclose(after[i]["vector"], expected[k], atol=1e-5)
        assert after[i]["name"] == f"new-{i}" and after[i]["dmu_origin"] == "evolved"
    for k, i in enumerate([shared_native, new_native]):
        np.testing.assert_allclose(after[i]["vector"], native_vectors[k], atol=1e-6)
        assert after[i]["dmu_origin"] == "native" and after[i]["name"] == "native"
    assert set(after) == (set(ids) - set(deleted)) | set(inserted) | {new_native}

    ok = cli(*verify_args(gallery, artifact))
    assert ok.exit_code == 0 and "OK" in ok.output, ok.output
    status = json.loads(cli("status", "--uri", str(gallery.db), "--json").output)
    last = status[0]["runs"][-1]
    assert (last["added"], last["updated"], last["deleted"]) == (5, 10, 10)
    shown = cli("status", "--uri", str(gallery.db))
    assert "+5 ~10" in shown.output and "534/534" in shown.output, shown.output
    assert status[0]["rows_done"] == len(ids) - 10 + 5

    idle = cli(*evolve_args(gallery, artifact))
    assert idle.exit_code == 0 and "up to date" in idle.output, idle.output


@pytest.mark.parametrize("sharded", [False, True])
def test_main_pass_never_overwrites_native_rows_of_an_existing_target(
    sharded: bool, gallery: Gallery, artifact: Artifact
) -> None:
    """A target that already holds the application's rows: those ids are left alone."""
    first = cli(*evolve_args(gallery, artifact))
    assert first.exit_code == 0, first.output
    ids = gallery.ids.tolist()
    client = MilvusClient(str(gallery.db))
    try:
        client.alter_alias("digits__v1", "digits")  # as if the cut-over never happened
        client.delete("digits__v2", ids=ids[5:])  # a target left with a few evolved rows...
        vector = [0.5] * len(read_all(gallery.db, "digits__v2")[ids[0]]["vector"])
        row = {"id": ids[0], "vector": vector, "label": 3, "name": "native"}
        tags = {"dmu_version": "v2", "dmu_from": "", "dmu_origin": "native", "dmu_src": ""}
        client.upsert("digits__v2", [{**row, **tags}])  # ...and one the application wrote
        client.flush("digits__v2")
    finally:
        client.close()
    shards = ("--shards", "2") if sharded else ()
    redo = cli(*evolve_args(gallery, artifact, "--restart", *shards))
    assert redo.exit_code == 0, redo.output
    rows = read_all(gallery.db, "digits__v2")
    assert rows[ids[0]]["dmu_origin"] == "native" and rows[ids[0]]["name"] == "native"
    np.testing.assert_allclose(rows[ids[0]]["vector"], vector, atol=1e-6)
    assert set(rows) == set(ids)


def alias_of(gallery: Gallery) -> str:
    client = MilvusClient(str(gallery.db))
    try:
        return str(client.describe_alias("digits")["collection_name"])
    finally:
        client.close()


def test_operator_decisions_stand_rollback_prune_and_filter(
    gallery: Gallery, artifact: Artifact
) -> None:
    uri = ["--uri", str(gallery.db)]
    subset = cli(*evolve_args(gallery, artifact, "--filter", "label < 5"))
    assert subset.exit_code == 0, subset.output
    assert "a --filter run does not move alias 'digits'" in " ".join(subset.output.split())
    assert alias_of(gallery) == "digits__v1"
    status = json.loads(cli("status", *uri, "--json").output)
    assert (status[0]["status"], status[0]["filter"]) == ("done", "label < 5")
    full = cli(*evolve_args(gallery, artifact))
    assert full.exit_code == 0 and alias_of(gallery) == "digits__v2", full.output
    assert json.loads(cli("status", *uri, "--json").output)[0]["filter"] is None

    back = cli("rollback", "--collection", "digits", *uri)
    assert back.exit_code == 0 and alias_of(gallery) == "digits__v1", back.output
    # The nightly run must not undo the operator's rollback.
    cron = cli(*evolve_args(gallery, artifact))
    assert cron.exit_code == 0, cron.output
    assert "was rolled back" in cron.output and "--reapply" in " ".join(cron.output.split())
    assert alias_of(gallery) == "digits__v1"
    status = json.loads(cli("status", *uri, "--json").output)
    assert status[0]["status"] == "rolled_back"
    assert "rolled back: alias 'digits' -> 'digits__v1'" in cli("history", *uri).output
    assert_clean_error(
        cli("prune", "--collection", "digits__v1", *uri, "--yes"), 2, "was rolled back"
    )
    assert_clean_error(cli("rollback", "--collection", "digits", *uri), 2, "already rolled back")

    again = cli(*evolve_args(gallery, artifact, "--reapply"))
    assert again.exit_code == 0 and alias_of(gallery) == "digits__v2", again.output
    # The last run covered every row, so the earlier --filter no longer blocks prune.
    pruned = cli("prune", "--collection", "digits__v1", *uri, "--yes")
    assert pruned.exit_code == 0 and "dropped 'digits__v1'" in pruned.output, pruned.output
    after = cli(*evolve_args(gallery, artifact))
    assert after.exit_code == 0 and "was pruned" in after.output, after.output
    status = json.loads(cli("status", *uri, "--json").output)
    assert status[0]["status"] == "pruned" and status[0]["alias_target"] == "digits__v2"
    assert_clean_error(cli("rollback", "--collection", "digits", *uri), 2, "was pruned")
    assert "pruned: dropped 'digits__v1'" in cli("history", *uri).output


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "cron"


def cron_commands() -> dict[str, list[str]]:
    """The dmu-migrate arguments of the crontab line and of the CronJob's container."""
    line = next(ln for ln in (EXAMPLES / "crontab").read_text().splitlines() if ln and ln[0] != "#")
    crontab = shlex.split(line.split(" dmu-migrate ", 1)[1].split(">>")[0])
    yaml = (EXAMPLES / "cronjob.yaml").read_text().splitlines()
    start = next(i for i, ln in enumerate(yaml) if ln.strip() == "args:")
    job = []
    for ln in yaml[start + 1 :]:
        if not ln.strip().startswith("- "):
            break
        job.append(ln.strip()[2:])
    return {"crontab": crontab, "cronjob": job}


def localise(args: list[str], gallery: Gallery, artifact: Artifact) -> list[str]:
    """The same command against the test's Milvus Lite file and artifact."""
    swap = {"--collection": "digits", "--adapter": str(artifact.path), "--uri": str(gallery.db)}
    swap["--metrics-file"] = str(gallery.db.parent / "dmu-migrate.prom")
    out: list[str] = []
    take = None
    for arg in args:
        if take:
            out.append(swap[take])
            take = None
        elif arg in swap:
            out.append(arg)
            take = arg
        elif arg.split("=", 1)[0] in swap:
            out.append(f"{arg.split('=', 1)[0]}={swap[arg.split('=', 1)[0]]}")
        else:
            out.append(arg)
    return out


@pytest.mark.parametrize("source", ["crontab", "cronjob"])
def test_cron_examples_run_as_written(source: str, gallery: Gallery, artifact: Artifact) -> None:
    args = localise(cron_commands()[source], gallery, artifact)
    first = cli(*args)
    assert first.exit_code == 0 and alias_of(gallery) == "digits__v2", first.output
    nightly = cli(*args)
    assert nightly.exit_code == 0 and "up to date" in nightly.output, nightly.output


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--threads", "100000", "--threads must be between 0 and 256, got 100000"),
        ("--max-retries", "-1", "--max-retries must be between 0 and 100"),
        ("--timeout", "-5", "--timeout must be between 1 and 86400"),
        ("--max-seconds", "-1", "--max-seconds must be >= 0"),
        ("--batch-size", "100000", "--batch-size must be between 1 and 16384"),
        ("--read-ahead", "1000", "--read-ahead must be between 0 and 64"),
        ("--workers", "0", "--workers must be between 1 and 256"),
    ],
)
def test_numeric_flags_out_of_range_are_one_line(
    flag: str, value: str, needle: str, gallery: Gallery, artifact: Artifact
) -> None:
    assert_clean_error(cli(*evolve_args(gallery, artifact, flag, value)), 2, needle)
    assert not MilvusClient(str(gallery.db)).has_collection("digits__v2")


def test_help_states_the_ranges() -> None:
    # Rich draws the help in a box that wraps anywhere: compare without spaces and borders.
    text = "".join(ch for ch in cli("evolve", "--help").output if not ch.isspace() and ch != "│")
    ranges = ("cores(in[0,256])", "(in[1,16384])", "(in[0,100])", "(in[1,86400])", "(>=0)")
    for rng in (*ranges, "(in[0,64])", "parallel(in[1,256])"):
        assert rng in text, rng


@pytest.mark.integration  # a holder process and six CLI processes
def test_a_lite_file_in_use_is_named_as_such(tmp_path: Path, artifact: Artifact) -> None:
    """Every command that opens the store, while a second process holds the Lite file.

    The holder makes the file itself: this process would hold any file it opened.
    """
    db = str(tmp_path / "busy.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pymilvus import MilvusClient\n"
            f"client = MilvusClient({db!r})\n"
            "client.create_collection('digits__v1', dimension=32)\n"
            "client.create_alias('digits__v1', 'digits')\n"
            "print('open', flush=True)\ntime.sleep(300)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    adapter = ["--adapter", str(artifact.path)]
    commands = {
        "evolve": ["evolve", "--uri", db, "--collection", "digits", *adapter],
        "verify": ["verify", "--uri", db, "--collection", "digits", *adapter],
        "status": ["status", "--uri", db],
        "history": ["history", "--uri", db],
        "rollback": ["rollback", "--uri", db, "--collection", "digits"],
        "prune": ["prune", "--uri", db, "--collection", "digits__v1", "--yes"],
    }
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        for name, args in commands.items():
            result = subprocess.run(
                [sys.executable, "-m", "dmu_migrate", *args],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 4, (name, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and result.stdout == "", (name, result.stderr)
            # Names the file, the process that holds it, and what to do.
            assert f"Milvus Lite file '{db}' is in use by process {holder.pid} (" in lines[0], (
                name,
                lines[0],
            )
            assert "wait for that process to finish" in lines[0], lines[0]
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # Nothing was written while it was held; once released the file opens as before.
    assert cli("status", "--uri", db).exit_code == 0
    assert not MilvusClient(db).has_collection("digits__v2")

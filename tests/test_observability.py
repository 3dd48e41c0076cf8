"""Scheduled runs report themselves: --log-format json lines and --metrics-file.

A real evolve of the digits gallery on Milvus Lite; the metrics file is read
back with a small parser of the Prometheus text format written here."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest
from galleries import Digits, Gallery, read_all
from migrations import evolve_args
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.cli.jsonlog import JsonFormatter
from dmu_migrate.cli.run_metrics import Run, write
from dmu_migrate.data import write_table

runner = CliRunner()
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """name -> [(labels, value)], checking every line against the text format."""
    assert text.endswith("\n")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("gauge", "counter") and name not in typed
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, _, body, value = match.groups()
        assert name in typed, f"{name} has no TYPE line before it"
        labels = {}
        if body:
            assert LABEL.sub("", body) == "", f"bad labels: {body!r}"
            labels = {
                k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                for k, v in LABEL.findall(body)
            }
        samples.setdefault(name, []).append((labels, float(value)))
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    found = [v for lab, v in samples["dmu_migrate_" + name] if labels.items() <= lab.items()]
    assert len(found) == 1, (name, labels, samples.get("dmu_migrate_" + name))
    return found[0]


def test_metrics_file_holds_the_runs_numbers_and_survives_a_failure(
    gallery: Gallery, artifact: Artifact, tmp_path: Path
) -> None:
    prom = tmp_path / "textfile" / "dmu.prom"
    prom.parent.mkdir()
    done = runner.invoke(
        app, [*evolve_args(gallery, artifact), "--json", "--metrics-file", str(prom)]
    )
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    samples = parse(prom.read_text())
    where = {"command": "evolve", "collection": "digits", "target": result["target"]}
    assert value(samples, "run_outcome", outcome="done") == 1
    assert value(samples, "run_outcome", outcome="error") == 0
    assert value(samples, "run_exit_code") == 0
    assert value(samples, "run_rows_written_total", **where) == result["rows_written"] > 0
    assert value(samples, "run_rows_caught_up_total", **where) == result["caught_up"]
    assert value(samples, "run_rows_updated_total", **where) == result["updated"]
    assert value(samples, "run_rows_deleted_total", **where) == result["deleted"]
    assert value(samples, "migration_rows_done", **where) == result["rows_done"]
    assert value(samples, "migration_rows_total", **where) == result["rows_total"]
    assert value(samples, "run_evolve_seconds", **where) == result["seconds"]
    assert value(samples, "verify_target_rows", **where) == result["verify"]["target_rows"]
    for phase, seconds in result["phases"].items():
        assert value(samples, "run_phase_seconds", phase=phase) == seconds
    assert value(samples, "run_duration_seconds") >= result["seconds"]
    success = value(samples, "last_success_timestamp_seconds")
    assert abs(success - value(samples, "run_timestamp_seconds")) < 1e-6

    # verify reports its own numbers the same way.
    checked_prom = tmp_path / "textfile" / "verify.prom"
    verify_args = ["verify", *evolve_args(gallery, artifact)[1:], "--json"]
    checked = runner.invoke(app, [*verify_args, "--metrics-file", str(checked_prom)])
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    verified = parse(checked_prom.read_text())
    assert value(verified, "run_outcome", command="verify", outcome="done") == 1
    assert value(verified, "verify_target_rows") == report["target_rows"]
    assert value(verified, "verify_source_rows") == report["source_rows"]
    checked_prom.unlink()

    # A failing run (no such collection): error outcome, its exit code, the old success kept.
    args = evolve_args(gallery, artifact, "--metrics-file", str(prom))
    args[args.index("digits")] = "no_such"
    failed = runner.invoke(app, args)
    assert failed.exit_code not in (0, 75), failed.output
    samples = parse(prom.read_text())
    assert value(samples, "run_outcome", outcome="error") == 1
    assert value(samples, "run_outcome", outcome="done") == 0
    assert value(samples, "run_exit_code", collection="no_such") == failed.exit_code
    assert value(samples, "last_success_timestamp_seconds") == success
    assert "dmu_migrate_run_rows_written_total" not in samples  # not measured: not written
    # Written whole by a rename: no temporary file is left beside it.
    assert sorted(p.name for p in prom.parent.iterdir()) == ["dmu.prom"]

    # A second run with nothing left is a success again.
    again = runner.invoke(app, [*evolve_args(gallery, artifact), "--metrics-file", str(prom)])
    assert again.exit_code == 0, again.output
    samples = parse(prom.read_text())
    assert value(samples, "last_success_timestamp_seconds") > success
    assert value(samples, "run_rows_written_total") == 0


def test_backfill_reports_its_numbers_and_a_metrics_dir_gone_mid_run_keeps_its_work(
    gallery: Gallery,
    artifact: Artifact,
    digits: Digits,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert runner.invoke(app, evolve_args(gallery, artifact)).exit_code == 0
    assert artifact.new_model_path is not None
    # backfill_embed embeds the stored rows with the new model, from their inputs x.
    x = digits.x_te[~digits.is_query]
    write_table(tmp_path / "x.parquet", {"id": gallery.ids, "x": x})
    monkeypatch.setenv("DMU_TEST_X", str(tmp_path / "x.parquet"))
    monkeypatch.setenv("DMU_TEST_MODEL", str(artifact.new_model_path))
    write_table(tmp_path / "first.parquet", {"id": gallery.ids[:12]})
    backfill = ["backfill", "--collection", "digits", "--uri", str(gallery.db)]
    backfill += ["--embed", "backfill_embed:embed", "--json", "--metrics-file"]
    first = [*backfill, str(tmp_path / "b.prom"), "--ids", str(tmp_path / "first.parquet")]

    done = runner.invoke(app, first)
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    samples = parse((tmp_path / "b.prom").read_text())
    where = {"command": "backfill", "collection": "digits", "target": result["target"]}
    assert value(samples, "run_outcome", command="backfill", outcome="done") == 1
    assert value(samples, "run_exit_code") == 0
    assert value(samples, "run_rows_written_total", **where) == result["rows_written"] == 12
    assert value(samples, "backfill_rows_done", **where) == result["rows_done"] == 12
    assert value(samples, "backfill_rows_total", **where) == 12
    assert value(samples, "run_backfill_seconds", **where) == result["seconds"]
    assert "dmu_migrate_last_success_timestamp_seconds" in samples
    # The same input again: nothing to do, still a success.
    again = runner.invoke(app, first)
    assert again.exit_code == 0 and json.loads(again.stdout)["up_to_date"], again.output
    samples = parse((tmp_path / "b.prom").read_text())
    assert value(samples, "run_outcome", outcome="nothing to do") == 1
    assert value(samples, "run_rows_written_total") == 0

    # The metrics directory is there when the run starts and gone when it ends.
    gone = tmp_path / "textfile"
    gone.mkdir()
    monkeypatch.setenv("DMU_TEST_REMOVE", str(gone))
    write_table(tmp_path / "second.parquet", {"id": gallery.ids[12:20]})
    second = [*backfill, str(gone / "b.prom"), "--ids", str(tmp_path / "second.parquet")]
    lost = runner.invoke(app, second)
    assert not gone.exists()
    assert lost.exit_code == 2, lost.output
    # One line naming the file and the fix, and saying that the run's work stands ...
    assert lost.stderr.count("\n") == 1 and "Traceback" not in lost.output
    assert lost.stderr.startswith(f"error: --metrics-file {gone / 'b.prom'}: cannot write in")
    assert "give a path in a writable directory" in lost.stderr
    assert "the run itself ended with exit code 0; its work is kept" in lost.stderr
    # ... which it is: the result was printed, and the rows and the ledger hold it.
    assert json.loads(lost.stdout)["rows_written"] == 8
    rows = read_all(gallery.db, result["target"])
    assert all(rows[i]["dmu_origin"] == "native" for i in gallery.ids[:20].tolist())
    monkeypatch.delenv("DMU_TEST_REMOVE")
    plain = [a for a in second if a not in ("--metrics-file", str(gone / "b.prom"))]
    assert json.loads(runner.invoke(app, plain).stdout)["up_to_date"]


def test_json_logs_are_one_object_a_line_with_fields(gallery: Gallery, artifact: Artifact) -> None:
    run = runner.invoke(app, ["--log-format", "json", *evolve_args(gallery, artifact), "-v"])
    assert run.exit_code == 0, run.output
    records = [json.loads(line) for line in run.stderr.splitlines()]  # every line parses
    assert records and all(
        {"ts", "level", "logger", "msg"} <= r.keys() and r["ts"].endswith("Z") for r in records
    )
    batches = [r for r in records if r["msg"].startswith("batch acknowledged")]
    assert batches and batches[-1]["collection"] == "digits__v1"
    assert batches[-1]["rows"] == len(gallery.ids)
    progress = [r for r in records if r["logger"] == "dmu_migrate.progress"]
    assert progress and progress[-1]["rows"] == len(gallery.ids)
    assert progress[-1]["total"] == len(gallery.ids)
    assert all(isinstance(r.get("rate", 0.0), float) for r in progress)  # only once measured

    # After the command too; the CLI's one-line error is a JSON record as well.
    args = evolve_args(gallery, artifact, "--log-format", "json")
    args[args.index("digits")] = "no_such"
    failed = runner.invoke(app, args)
    assert failed.exit_code not in (0, 75)
    lines = failed.stderr.splitlines()
    error = json.loads(lines[-1])
    assert error["level"] == "ERROR" and "no_such" in error["msg"]
    assert all(json.loads(line) for line in lines)


def test_text_logs_are_unchanged_and_a_bad_format_is_named(
    gallery: Gallery, artifact: Artifact
) -> None:
    args = evolve_args(gallery, artifact)
    args[args.index("digits")] = "no_such"
    text = runner.invoke(app, args)
    assert text.stderr.startswith("error: ") and "no_such" in text.stderr
    bad = runner.invoke(app, ["--log-format", "yaml", *evolve_args(gallery, artifact)])
    assert bad.exit_code == 2
    assert "--log-format must be text or json, got 'yaml'" in bad.stderr


def test_an_unwritable_metrics_path_is_refused_before_the_run(
    gallery: Gallery, artifact: Artifact, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "dmu.prom"
    refused = runner.invoke(app, [*evolve_args(gallery, artifact), "--metrics-file", str(missing)])
    assert refused.exit_code == 2
    assert (
        refused.stderr.startswith("error: --metrics-file ") and "does not exist" in refused.stderr
    )
    assert "Traceback" not in refused.output
    assert not missing.parent.exists()


def test_a_traceback_is_folded_into_one_json_line() -> None:
    record = logging.LogRecord(
        "dmu_migrate.x", logging.ERROR, __file__, 1, "failed %s", ("x",), None
    )
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        record.exc_info = sys.exc_info()
    record.collection = "faces"
    text = JsonFormatter().format(record)
    assert "\n" not in text
    parsed = json.loads(text)
    assert parsed["msg"] == "failed x" and parsed["collection"] == "faces"
    assert "Traceback" in parsed["exc"] and "ValueError: first\nsecond" in parsed["exc"]


def test_label_values_are_escaped_and_the_file_replaced_whole(tmp_path: Path) -> None:
    prom = tmp_path / "odd.prom"
    prom.write_text("dmu_migrate_last_success_timestamp_seconds 1234.5\n")
    run = Run(labels={"command": "evolve", "collection": 'a"b\\c\nd'})
    run.add("run_rows_written_total", "counter", "Rows.", 7, target="t")
    write(prom, run, 4, 1.5, ("done",))
    samples = parse(prom.read_text())
    assert value(samples, "run_rows_written_total", collection='a"b\\c\nd', target="t") == 7
    assert value(samples, "last_success_timestamp_seconds") == 1234.5  # exit 4: kept
    assert value(samples, "run_outcome", outcome="error") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.prom"]

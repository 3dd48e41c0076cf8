"""Every failure ends in one line (text) or one JSON object (--log-format json): usage errors,
crashes, corrupt manifests and corrupt Parquet-store metadata; and --metrics-file is written
whatever the exit.

Usage errors and refusals run through the CLI runner; a crash runs in a real process (a
child python whose store read raises), since what it prints to the process's stderr is
the point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from backends import Backend
from galleries import Digits, Gallery
from helpers import assert_clean_error
from migrations import evolve_args
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def metrics(path: Path) -> dict[str, str]:
    """The samples of a Prometheus text file, by name with labels."""
    lines = path.read_text().splitlines()
    return dict(line.rsplit(" ", 1) for line in lines if not line.startswith("#"))


# -- usage errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["evolve", "--collection", "c", "--adapter", "a", "--no-such-flag"], "--no-such-flag"),
        (["evolve", "--collection", "c", "--adapter", "a", "--batch-size", "ten"], "--batch-size"),
        (["evolve", "--adapter", "a"], "--collection"),
        (["evolv"], "evolve"),
    ],
)
def test_usage_errors_are_one_line_in_text_and_in_json(args: list[str], needle: str) -> None:
    text = cli(*args)
    assert text.exit_code == 2, text.output
    assert text.stdout == ""
    lines = text.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert "--help'" in lines[0] and "Usage:" not in text.stderr

    for flags in (["--log-format", "json", *args], [*args, "--log-format=json"]):
        as_json = cli(*flags)
        assert as_json.exit_code == 2, as_json.output
        (line,) = as_json.stderr.splitlines()
        record = json.loads(line)
        assert record["level"] == "ERROR" and needle in record["msg"]
        assert record["exit_code"] == 2


def test_metrics_file_is_written_on_a_usage_error_and_a_refused_flag(tmp_path: Path) -> None:
    prom = tmp_path / "dmu.prom"
    usage = cli("evolve", "--collection", "c", "--adapter", "a", "--batch-size", "x")
    assert usage.exit_code == 2 and not prom.exists()  # no --metrics-file: none written
    for extra in (["--batch-size", "ten"], ["-q", "-v"], ["--log-format", "yaml"]):
        prom.unlink(missing_ok=True)
        args = ["evolve", "--collection", "c", "--adapter", "a", "--metrics-file", str(prom)]
        refused = cli(*args, *extra)
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.count("\n") == 1, refused.stderr
        samples = metrics(prom)
        assert samples['dmu_migrate_run_exit_code{command="evolve"}'] == "2"
        assert samples['dmu_migrate_run_outcome{command="evolve",outcome="error"}'] == "1"
    # A path the command refused as unwritable is said once, not again on the way out.
    missing = tmp_path / "no-such-dir" / "dmu.prom"
    args = ["evolve", "--collection", "c", "--adapter", "a", "--metrics-file", str(missing)]
    unwritable = cli(*args)
    assert unwritable.exit_code == 2 and unwritable.stderr.count("\n") == 1, unwritable.stderr
    assert "does not exist or is not writable" in unwritable.stderr
    # A command without --metrics-file names the option as unknown, and writes nothing.
    prom.unlink()
    status = cli("status", "--uri", str(tmp_path / "x.db"), "--metrics-file", str(prom))
    assert status.exit_code == 2 and "No such option: --metrics-file" in status.stderr
    assert not prom.exists()


def test_no_arguments_still_print_the_help() -> None:
    shown = cli()
    assert "Commands" in shown.output and "evolve" in shown.output


# -- crashes -------------------------------------------------------------------------

CRASH = """
import os, sys
from dmu_migrate.cli import main
from dmu_migrate.stores.parquet import ParquetStore

def broken(self, *args, **kwargs):
    raise RuntimeError("store call broke\\non two lines")

# A bug in one store method, as the CLI meets one.
setattr(ParquetStore, os.environ["DMU_BREAK"], broken)
sys.argv = ["dmu-migrate", *sys.argv[1:]]
main()
"""


def crash(
    tmp_path: Path, *args: str, method: str = "ledger_list"
) -> subprocess.CompletedProcess[str]:
    env = {"DMU_CRASH_DIR": str(tmp_path / "crashes"), "DMU_BREAK": method}
    (tmp_path / "crashes").mkdir(exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-c", CRASH, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PYTHONPATH": str(root)},
        timeout=120,
    )


def test_a_crash_in_process_is_one_line_and_one_json_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dmu_migrate.stores.parquet import ParquetStore

    def broken(self: Any) -> None:
        raise KeyError("no such key")

    monkeypatch.setattr(ParquetStore, "ledger_list", broken)
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    monkeypatch.setenv("DMU_CRASH_DIR", str(crashes))
    uri = f"parquet:{tmp_path / 'store'}"
    text = cli("history", "--uri", uri)
    assert text.exit_code == 1
    (line,) = text.stderr.splitlines()
    assert line.startswith("error: unexpected KeyError at dmu_migrate/evolve/ledger.py:")
    (saved,) = crashes.iterdir()
    assert saved.name in line and "KeyError" in saved.read_text()
    record = json.loads(cli("history", "--uri", uri, "--log-format", "json").stderr)
    assert record["exception"] == "KeyError" and record["exit_code"] == 1


@pytest.mark.integration
def test_a_crash_is_one_line_naming_the_exception_and_its_traceback(tmp_path: Path) -> None:
    uri = f"parquet:{tmp_path / 'store'}"
    text = crash(tmp_path, "status", "--uri", uri)
    assert text.returncode == 1 and text.stdout == ""
    (line,) = text.stderr.splitlines()
    assert line.startswith("error: unexpected RuntimeError at dmu_migrate/evolve/ledger.py:")
    assert "store call broke on two lines" in line and "please report it" in line
    saved = Path(line.split("its traceback is in ", 1)[1].split(" ", 1)[0])
    assert saved.parent == tmp_path / "crashes"
    assert "Traceback (most recent call last)" in saved.read_text()

    as_json = crash(tmp_path, "--log-format", "json", "status", "--uri", uri)
    assert as_json.returncode == 1
    (record_line,) = as_json.stderr.splitlines()
    record = json.loads(record_line)
    assert record["exception"] == "RuntimeError" and record["where"].startswith("dmu_migrate/")
    assert "Traceback" in record["exc"] and Path(record["traceback"]).is_file()

    loud = crash(tmp_path, "status", "--uri", uri, "-vv")
    assert "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.rstrip().splitlines()[-1].startswith("error: unexpected RuntimeError")


@pytest.mark.integration
def test_a_crash_in_a_command_with_metrics_file_still_writes_it(
    tmp_path: Path, digits: Digits, artifact: Artifact
) -> None:
    backend = Backend("parquet", f"parquet:{tmp_path / 'parquet'}", tmp_path)
    backend.seed("digits__v1", list(range(1, 41)), digits.old_te[:40], alias="digits")
    prom = tmp_path / "dmu.prom"
    args = ["evolve", "--collection", "digits", "--adapter", str(artifact.path)]
    # flush ends the main pass: the crash comes after rows were written.
    done = crash(tmp_path, *args, "--uri", backend.uri, "--metrics-file", str(prom), method="flush")
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: unexpected RuntimeError at dmu_migrate/")
    samples = metrics(prom)
    assert samples['dmu_migrate_run_exit_code{command="evolve",collection="digits"}'] == "1"
    assert (
        samples['dmu_migrate_run_outcome{command="evolve",collection="digits",outcome="error"}']
        == "1"
    )


# -- corrupt manifests ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("files", None, "files = null"),
        ("quality", [1], "quality = [1]"),
        ("name", None, "name = null"),
        ("old_dim", "32", 'old_dim = "32"'),
        ("normalized", 1, "normalized = 1"),
        ("quality", {"settings": {"old->old": 0.5}}, "quality.settings.old->old = 0.5"),
        ("quality", {"fusion": {"a": "x"}}, "quality.fusion"),
        ("files", {"adapter.onnx": 7}, "files.adapter.onnx = 7"),
    ],
)
def test_a_manifest_key_of_the_wrong_type_is_named(
    tmp_path: Path, gallery: Gallery, artifact: Artifact, key: str, value: Any, named: str
) -> None:
    copy = tmp_path / "digits-v2"
    shutil.copytree(artifact.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest[key] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    args = evolve_args(gallery, artifact)
    args[args.index(str(artifact.path))] = str(copy)
    result = cli(*args)
    assert_clean_error(
        result, 3, f"manifest '{copy / 'manifest.json'}'", named, "copy the artifact again"
    )
    for command in (["transition", "--adapter", str(copy)],):
        assert_clean_error(cli(*command), 3, named)


# -- corrupt Parquet-store metadata ----------------------------------------------------


@pytest.mark.parametrize(
    ("file", "content", "named"),
    [
        ("aliases.json", "{not json", "it is not valid JSON"),
        ("aliases.json", "[1]", "it holds list"),
        ("aliases.json", '{"digits": 3}', "alias 'digits' maps to 3"),
        ("digits__v2/schema.json", "", "it is not valid JSON"),
        ("digits__v2/schema.json", '{"pk": "id"}', "'metric' is null"),
        ("digits__v2/schema.json", '{"pk": "id", "metric": "COSINE"}', "'vector_fields' is"),
        ("ledger.json", "[", "it is not valid JSON"),
        ("ledger.json", "[1]", "it holds list"),
        ("ledger.json", '{"k": 1}', "entry 'k' is 1"),
    ],
)
def test_corrupt_parquet_metadata_is_named_with_its_fix(
    tmp_path: Path, digits: Digits, artifact: Artifact, file: str, content: str, named: str
) -> None:
    backend = Backend("parquet", f"parquet:{tmp_path / 'parquet'}", tmp_path)
    backend.seed("digits__v1", list(range(1, 41)), digits.old_te[:40], alias="digits")
    evolve = ["evolve", "--collection", "digits", "--adapter", str(artifact.path)]
    assert cli(*evolve, "--uri", backend.uri).exit_code == 0
    path = tmp_path / "parquet" / file
    path.write_text(content)
    fix = {
        "aliases.json": "restore it from a backup",
        "schema.json": "restore it from a backup",
        "ledger.json": "move it aside",
    }[path.name]
    verify = ["verify", "--collection", "digits__v1", "--alias", "digits"]
    readers = {  # the commands that read each file (status never reads a schema)
        "aliases.json": ["status", "history", "evolve"],
        "schema.json": ["evolve", "verify"],
        "ledger.json": ["status", "history", "evolve"],
    }[path.name]
    commands = {
        "status": ["status", "--collection", "digits"],
        "history": ["history", "--collection", "digits"],
        "evolve": evolve,
        "verify": [*verify, "--adapter", str(artifact.path)],
    }
    for command in [[*commands[name], "--uri", backend.uri] for name in readers]:
        result = cli(*command)
        assert_clean_error(result, 4, f"{path} in Parquet store", named, fix)
        as_json = cli(*command, "--log-format", "json")
        (line,) = as_json.stderr.splitlines()
        assert named in json.loads(line)["msg"]


def test_a_library_warning_is_a_json_record_under_json_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from dmu_migrate.stores.parquet import ParquetStore

    def warns(self: Any) -> list[Any]:
        warnings.warn(
            "a client library's deprecation\nsecond line", DeprecationWarning, stacklevel=2
        )
        return []

    monkeypatch.setattr(ParquetStore, "ledger_list", warns)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        shown = cli("history", "--uri", f"parquet:{tmp_path / 's'}", "--log-format", "json")
    assert shown.exit_code == 0, shown.output
    records = [json.loads(line) for line in shown.stderr.splitlines()]
    assert [r["logger"] for r in records] == ["py.warnings"]
    assert "a client library's deprecation" in records[0]["msg"]

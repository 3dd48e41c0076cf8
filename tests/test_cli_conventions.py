"""The conventions users expect of a command line, through the real CLI.

-v/-q after the command, --version, choices and help on every flag, messages
printed literally, 'n' to a confirmation, quiet client libraries, progress in
logs, credentials from the usual variables, Qdrant URLs, 80 columns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from galleries import Digits, Gallery
from migrations import evolve_args
from pymilvus import MilvusClient
from typer.testing import CliRunner

from dmu_migrate import __version__
from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.stores.base import store_kind, store_token
from dmu_migrate.stores.opener import open_store

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"dmu-migrate {__version__}"


def test_verbose_and_quiet_after_the_command(gallery: Gallery, artifact: Artifact) -> None:
    dry = evolve_args(gallery, artifact, "--dry-run", "--alias", "fresh")
    for flags in (["-v"], ["-vv"], ["--verbose"]):
        after = runner.invoke(app, [*dry, *flags])
        assert after.exit_code == 0, after.output
        assert "Nothing was changed" in after.stdout
        # 'fresh' is not an alias yet: a normal state, not a client traceback in the log.
        assert "Traceback" not in after.stderr and "decorators.py" not in after.stderr
    before = runner.invoke(app, ["-v", *dry])
    assert before.exit_code == 0, before.output
    both = runner.invoke(app, ["-v", *dry, "-q"])
    assert both.exit_code == 2 and "error: -q (errors only) and -v" in both.stderr

    quiet = runner.invoke(app, [*evolve_args(gallery, artifact), "-q"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == "" and quiet.stderr == ""
    # -q leaves a document a script asked for.
    status = runner.invoke(app, ["-q", "status", "--uri", str(gallery.db), "--json"])
    assert json.loads(status.stdout)[0]["status"] == "done"
    again = runner.invoke(app, [*evolve_args(gallery, artifact)])
    assert "up to date" in again.stdout  # the next invocation is not quiet


def _commands() -> dict[str, Any]:
    # typer ships its own copy of click: its classes are not click's, so no isinstance.
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_flag_has_help_and_choices_show() -> None:
    for name, command in _commands().items():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts[0]} has no help"

    def help_of(command: str) -> str:
        shown = runner.invoke(app, [command, "--help"])
        assert shown.exit_code == 0, shown.output
        return " ".join(shown.stdout.split())  # wrapped lines joined

    evolve = help_of("evolve")
    assert "[new-collection|new-field|in-place]" in evolve and "[local|ray]" in evolve
    assert "--strategy <str>" not in evolve
    assert "-v, --verbose" in evolve and "-q, --quiet" in evolve
    train = help_of("train")
    assert "[dmu|bct|independent|adapter]" in train
    # Numeric settings state the range that train checks.
    assert "sooner (> 0)" in train and "(>= 2)" in train and "(in [0, 1))" in train
    # Help text is not Rich markup: bracketed formulas stay.
    assert "stores [o ; psi(o)] and queries [a q_old ; b q_new]" in help_of("transition")
    checked = runner.invoke(app, ["train", "t.parquet", "--name", "x", "--dropout", "1"])
    assert checked.exit_code == 2 and "--dropout must be in [0, 1) (got 1.0)" in checked.stderr


def test_messages_are_printed_literally(gallery: Gallery, artifact: Artifact) -> None:
    # Rich markup would read "[bold]" and "[train]" as style tags and drop them.
    result = runner.invoke(
        app,
        [
            "evolve",
            "--collection",
            "faces[bold]x",
            "--adapter",
            str(artifact.path),
            "--uri",
            str(gallery.db),
        ],
    )
    assert result.exit_code == 4, result.output
    assert "collection 'faces[bold]x' does not exist" in result.stderr
    plot = runner.invoke(
        app,
        ["evaluate", "e.parquet", "--adapter", str(artifact.path), "--plot", "[train].txt"],
    )
    assert plot.exit_code == 2 and "--plot '[train].txt' is not a .png" in plot.stderr


def test_prune_answered_no_drops_nothing_and_exits_0(gallery: Gallery, artifact: Artifact) -> None:
    assert runner.invoke(app, evolve_args(gallery, artifact)).exit_code == 0
    prune = ["prune", "--collection", "digits__v1", "--uri", str(gallery.db)]
    asked = runner.invoke(app, prune, input="n\n")
    assert asked.exit_code == 0, asked.output
    assert "nothing was dropped from 'digits__v1'" in asked.stdout
    # No answer at all (stdin closed, as under cron): one line naming --yes, not "Aborted!".
    unanswered = runner.invoke(app, prune, input="")
    assert unanswered.exit_code == 2, unanswered.output
    assert unanswered.stderr.count("\n") == 1 and "Aborted" not in unanswered.output
    assert "got no answer" in unanswered.stderr and "pass --yes" in unanswered.stderr
    # --json is for scripts: it never asks (the prompt would break the document), it refuses.
    scripted = runner.invoke(app, [*prune, "--json"], input="y\n")
    assert scripted.exit_code == 2, scripted.output
    assert scripted.stdout == "" and scripted.stderr.count("\n") == 1
    assert "drop collection 'digits__v1'" in scripted.stderr and "(--yes)" in scripted.stderr
    client = MilvusClient(str(gallery.db))
    try:
        assert client.has_collection("digits__v1")
    finally:
        client.close()

    pruned = runner.invoke(app, [*prune, "--json", "--yes"])
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.stdout) == {
        "migration": "digits__v1->digits__v2",
        "collection": "digits__v1",
        "pruned": True,
        "message": "dropped 'digits__v1'",
        "dropped": "digits__v1",
        "rows": len(gallery.ids),
    }
    client = MilvusClient(str(gallery.db))
    try:
        assert not client.has_collection("digits__v1")
    finally:
        client.close()


def test_completion_scripts_name_the_program_and_complete_in_bash(tmp_path: Path) -> None:
    scripts = {}
    for shell in ("bash", "zsh", "fish", "powershell"):
        shown = runner.invoke(app, ["completion", shell])
        assert shown.exit_code == 0, shown.output
        scripts[shell] = shown.stdout
        assert "dmu-migrate" in shown.stdout and "_DMU_MIGRATE_COMPLETE" in shown.stdout
    assert "complete -o default -F _dmu_migrate_completion dmu-migrate" in scripts["bash"]
    refused = runner.invoke(app, ["completion", "tcsh"])
    assert refused.exit_code == 2 and "unknown shell 'tcsh'; use one of bash" in refused.stderr

    # The printed script, loaded by a real bash, completes through the program itself.
    program = tmp_path / "bin" / "dmu-migrate"  # as pip installs it: argv[0] names it
    program.parent.mkdir()
    program.write_text(f"#!{sys.executable}\nfrom dmu_migrate.cli import main\nmain()\n")
    program.chmod(0o755)
    (tmp_path / "complete.bash").write_text(scripts["bash"])
    words = {"ev": "dmu-migrate ev", "prune --": "dmu-migrate prune --"}
    lines = [f"source {tmp_path / 'complete.bash'}"]
    for typed in words.values():
        count = len(typed.split()) - (0 if typed.endswith(" ") else 1)
        lines.append(
            f"COMP_WORDS=({typed}); COMP_CWORD={count}; _dmu_migrate_completion dmu-migrate; "
            'echo "${COMPREPLY[*]}"'
        )
    env = {
        **os.environ,
        "PATH": f"{program.parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),  # this checkout, as the test process imports it
    }
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        env=env,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    commands, flags = done.stdout.splitlines()
    assert commands.split() == ["evaluate", "evolve"], done.stdout
    assert {"--collection", "--yes", "--json"} <= set(flags.split()), done.stdout


def test_train_progress_is_logged_off_a_terminal(tmp_path: Path, digits: Digits) -> None:
    args = ["train", str(digits.train_path), "--name", "p", "--out-dir", str(tmp_path)]
    result = runner.invoke(app, [*args, "--epochs", "2", "-v"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "dmu_migrate.progress" in line]
    # The first epoch and the last are logged whatever the interval.
    assert len(lines) >= 2 and "train: 1/2" in lines[0], result.stderr
    assert "torch trains with" in result.stderr  # the thread choice is said at -v


def test_status_and_history_fit_80_columns(gallery: Gallery, artifact: Artifact) -> None:
    evolved = runner.invoke(app, [*evolve_args(gallery, artifact), "-v"])
    assert evolved.exit_code == 0, evolved.output
    rows = f"{len(gallery.ids):,}"
    assert f"dmu_migrate.progress: evolve: {rows}/{rows}" in evolved.stderr  # no terminal here
    for command in ("status", "history"):
        shown = runner.invoke(app, [command, "--uri", str(gallery.db)], env={"COLUMNS": "80"})
        assert shown.exit_code == 0, shown.output
        assert max(len(line) for line in shown.stdout.splitlines()) <= 80, shown.stdout
        # What users copy is whole on one line.
        assert "digits__v1->digits__v2" in shown.stdout
    status = runner.invoke(app, ["status", "--uri", str(gallery.db)], env={"COLUMNS": "80"})
    assert re.search(r"alias\s+digits -> digits__v2", status.stdout), status.stdout
    wide = runner.invoke(app, ["status", "--uri", str(gallery.db)], env={"COLUMNS": "200"})
    assert "┃ migration" in wide.stdout  # a wide terminal keeps the table


def test_store_credentials_from_the_usual_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILVUS_TOKEN", "m")
    monkeypatch.setenv("QDRANT_API_KEY", "q")
    assert store_token("http://h:19530", None) == "m"
    assert store_token("faces.db", None) == "m"
    assert store_token("http://h:6333", None) == "q"
    assert store_token("qdrant:dir", None) == "q"
    assert store_token("parquet:dir", None) is None
    assert store_token("http://h:6333", "given") == "given"  # --token or DMU_TOKEN first
    monkeypatch.delenv("QDRANT_API_KEY")
    assert store_token("http://h:6333", None) is None


def test_qdrant_urls_reach_qdrant(tmp_path: Path) -> None:
    assert store_kind("http://localhost:6333") == "qdrant"
    assert store_kind("https://cloud.example:6334/") == "qdrant"
    assert store_kind("http://localhost:19530") == "milvus"
    assert store_kind(f"qdrant:{tmp_path}") == "qdrant"
    # Nothing listens on Qdrant's port here: the error comes from the Qdrant client.
    result = runner.invoke(app, ["status", "--uri", "http://127.0.0.1:6333"])
    assert result.exit_code == 4, result.output
    assert "Qdrant at" in result.stderr and "Milvus" not in result.stderr
    local = open_store(f"qdrant:{tmp_path / 'q'}")
    try:
        assert type(local).__name__ == "QdrantStore"
    finally:
        local.close()

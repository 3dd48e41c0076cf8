"""Progress phase by phase: every long phase of evolve and verify reports a count that only
grows and ends at its total, and the command line logs a line per phase off a terminal.

Real stores (the ``backend`` fixture; the Milvus Lite gallery for the commands) and the
real digits adapter; the only stand-in is a store wrapper that inserts a row into the
source mid-pass, as an application writing during the run does.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from backends import Backend
from galleries import Digits, Gallery
from helpers import InsertsBehindCursor, Phases
from migrations import evolve_args, verify_args
from pymilvus import MilvusClient
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.evolve import fanout
from dmu_migrate.evolve.pipeline import EvolveOptions, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.progress import CATCH_UP, EVOLVE, ID_DIFF, SPLIT, VERIFY
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.shards import evolve_split
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.base import Batch

ROWS = 120
OPTIONS = EvolveOptions(batch_size=32)
runner = CliRunner()


def seed(backend: Backend, digits: Digits) -> str:
    source, alias = backend.unique("prog"), backend.unique("live")
    ids = np.arange(10, 10 + ROWS) * 3  # sparse and ordered: a row fits in below them
    fields: dict[str, list[Any]] = {
        "label": [int(v) for v in digits.y_te[:ROWS]],
        "name": [f"n{i}" for i in ids],
    }
    backend.seed(source, ids, digits.old_te[:ROWS], fields, alias=alias)
    return alias


@pytest.mark.timeout(600)
def test_an_evolve_with_a_catch_up_reports_every_phase(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    alias = seed(backend, digits)
    store = backend.open_store()
    late = Batch(np.array([3]), digits.old_te[ROWS : ROWS + 1], {"label": [1], "name": ["n3"]})
    plan = make_plan(store, alias, AdapterChain([artifact]))
    phases = Phases()
    result = evolve(InsertsBehindCursor(store, late), plan, OPTIONS, phases)
    assert result.outcome == Outcome.DONE and result.caught_up == 1
    ends = phases.check(EVOLVE, ID_DIFF, CATCH_UP, VERIFY)
    # The pass wrote the rows it was planned for; the late row came in through catch-up,
    # and the diff and verification compared every id, the late one too.
    assert ends == {EVOLVE: ROWS, ID_DIFF: ROWS + 1, CATCH_UP: 1, VERIFY: ROWS + 1}
    assert phases.calls[EVOLVE][0] == (0, ROWS)  # shown before the first batch, with its total
    assert phases.calls[VERIFY][0] == (0, ROWS + 1)

    # A cron run with nothing to do: the comparison and verification, and no catch-up.
    again = Phases()
    assert evolve(store, make_plan(store, alias, AdapterChain([artifact])), OPTIONS, again)
    assert again.check(ID_DIFF, VERIFY) == {ID_DIFF: ROWS + 1, VERIFY: ROWS + 1}


@pytest.mark.timeout(600)
def test_a_sharded_evolve_reports_the_split(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    alias = seed(backend, digits)
    store = backend.open_store()
    plan = make_plan(store, alias, AdapterChain([artifact], threads=1))
    job = fanout.ShardJob(
        backend.uri, None, alias, (str(artifact.path),), 1, (), OPTIONS, 3, fanout.new_owner()
    )
    phases = Phases()
    runner_ = fanout.in_process(store, plan, job)
    result = evolve_split(store, plan, 3, OPTIONS, runner_, job.owner, phases)
    assert result.outcome == Outcome.DONE
    # The split reads the ids up to the last cut; one whole pass per shard: counts suffice.
    ends = phases.check(SPLIT, EVOLVE, VERIFY)
    assert ends == {SPLIT: ROWS * 2 // 3, EVOLVE: ROWS, VERIFY: ROWS}


def test_every_phase_has_its_unit_on_the_command_line() -> None:
    from dmu_migrate.cli.common import UNITS
    from dmu_migrate.evolve.progress import PHASES

    assert set(PHASES) == set(UNITS)  # a bar without one shows a bare count


def progress_lines(stderr: str) -> dict[str, list[str]]:
    """dmu_migrate.progress lines of a -v run, by phase."""
    lines: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        if "dmu_migrate.progress: " in line:
            phase = line.split("dmu_migrate.progress: ", 1)[1].split(":")[0]
            lines.setdefault(phase, []).append(line)
    return lines


@pytest.mark.timeout(600)
def test_each_phase_logs_its_lines_off_a_terminal(
    gallery: Gallery, artifact: Artifact, digits: Digits
) -> None:
    rows = len(gallery.ids)
    first = runner.invoke(app, [*evolve_args(gallery, artifact), "-v"])
    assert first.exit_code == 0, first.output
    logged = progress_lines(first.stderr)
    assert list(logged) == ["evolve", "verify"], first.stderr  # counts stood in for the diff
    assert f"evolve: {rows:,}/{rows:,} rows" in logged["evolve"][-1]
    assert f"verify: {rows:,}/{rows:,} ids" in logged["verify"][-1]

    # Rows the application added since: the cron run compares, catches up, verifies.
    client = MilvusClient(str(gallery.db))
    try:
        client.insert(
            "digits__v1",
            [
                {"id": 5000 + k, "vector": digits.old_te[k].tolist(), "label": 1, "name": "new"}
                for k in range(3)
            ],
        )
    finally:
        client.close()
    cron = runner.invoke(app, ["--log-format", "json", *evolve_args(gallery, artifact), "-v"])
    assert cron.exit_code == 0, cron.output
    records = [json.loads(line) for line in cron.stderr.splitlines()]
    progress = [r for r in records if r["logger"] == "dmu_migrate.progress"]
    tasks = list(dict.fromkeys(r["task"] for r in progress))
    # No main pass this run: the migration's rows are shown once, at the end.
    assert tasks == ["id diff", "catch-up", "verify", "evolve"], tasks
    last = {r["task"]: r for r in progress}
    assert last["id diff"]["rows"] == last["id diff"]["total"] == rows + 3
    assert last["catch-up"]["rows"] == last["catch-up"]["total"] == 3
    assert last["verify"]["rows"] == last["verify"]["total"] == rows + 3
    assert last["evolve"]["rows"] == rows + 3

    checked = runner.invoke(
        app,
        verify_args(gallery, artifact, "-v"),
    )
    assert checked.exit_code == 0, checked.output
    logged = progress_lines(checked.stderr)
    assert list(logged) == ["verify"], checked.stderr
    assert logged["verify"][0].endswith(f"verify: 0/{rows + 3:,} ids")  # at once, before the scan
    assert f"verify: {rows + 3:,}/{rows + 3:,} ids" in logged["verify"][-1]

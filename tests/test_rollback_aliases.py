"""Rollback moves back the alias named, and only it: two aliases evolved from one source.

An alias is served by the migration that last moved it; a source can feed several
(`evolve --alias faces_v2` beside a plain evolve of `faces`, or a transition artifact
behind a second alias), and one migration can move two aliases (the same source and
adapter through two names). Each rollback must move its own alias back and leave the
other where it is; a name that fits several aliases is refused with them listed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from backends import Backend
from galleries import Digits, Gallery, seed_gallery
from helpers import assert_clean_error
from migrations import run
from pymilvus import MilvusClient
from rich.console import Console
from typer.testing import CliRunner, Result

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.cli.views import history_view
from dmu_migrate.errors import InputError, NothingToDo
from dmu_migrate.evolve import admin
from dmu_migrate.evolve.ledger import DONE, ROLLED_BACK, Ledger
from dmu_migrate.stores.base import VectorStore
from dmu_migrate.training.transition import make_transition

EMBEDDED = ["milvus-lite", "parquet"]
runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def transition(artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """v1 -> v2_fused: stores [o ; psi(o)], for a second alias beside the plain v2 one."""
    return make_transition(artifact.path, tmp_path_factory.mktemp("transition")).transition


def aliases_of(store: VectorStore, key: str) -> dict[str, dict]:
    """status's view of one migration: each alias it moved, by name."""
    row = next(r for r in admin.migration_status(store, None) if r["key"] == key)
    return {a["alias"]: a for a in row["aliases"]}


def history_text(store: VectorStore) -> str:
    console = Console(width=200, record=True)
    console.print(history_view(admin.migration_status(store, None)))
    return console.export_text()


@pytest.mark.parametrize("backend", EMBEDDED, indirect=True)
@pytest.mark.parametrize("first", ["plain", "fused"])
def test_each_rollback_moves_only_the_alias_named(
    backend: Backend, digits: Digits, artifact: Artifact, transition: Artifact, first: str
) -> None:
    source, plain, _ = seed_gallery(backend, digits)
    fused = backend.unique("fused")
    store = backend.open_store()
    v2 = run(store, plain, [artifact])  # the older migration: 'plain' -> <source>__v2
    fused_run = run(store, source, [transition], alias=fused)  # the newer one, its own alias
    targets = {plain: v2.target, fused: fused_run.target}
    keys = {plain: v2.migration, fused: fused_run.migration}
    assert v2.migration != fused_run.migration
    assert {a: store.alias_target(a) for a in targets} == targets

    # The source names both migrations: refused, with both aliases, and nothing moved.
    with pytest.raises(InputError) as refused:
        admin.rollback(store, source)
    message = str(refused.value)
    assert "\n" not in message and "names 2 migrations" in message
    assert f"one of '{plain}', '{fused}'" in message and "--collection ALIAS" in message
    assert {a: store.alias_target(a) for a in targets} == targets

    # status and history say which alias each migration moved and where it points.
    assert aliases_of(store, v2.migration)[plain]["points_at"] == v2.target
    assert aliases_of(store, v2.migration)[plain]["previous"] == source
    assert set(aliases_of(store, fused_run.migration)) == {fused}
    text = history_text(store)
    assert f"moved alias '{plain}' from '{source}'" in text
    assert f"moved alias '{fused}' (it named no collection before)" in text

    order = [plain, fused] if first == "plain" else [fused, plain]
    for done, alias in enumerate(order):
        key, message = admin.rollback(store, alias)
        assert key == keys[alias] and f"alias '{alias}' -> '{source}'" in message
        assert store.alias_target(alias) == source
        for other in order[done + 1 :]:  # not rolled back yet: still on its evolved target
            assert store.alias_target(other) == targets[other]
            assert aliases_of(store, keys[other])[other]["rolled_back_at"] is None
        assert aliases_of(store, key)[alias]["rolled_back_at"] is not None
        assert Ledger(store).load(key).status == ROLLED_BACK  # type: ignore[union-attr]
        with pytest.raises(InputError, match="already rolled back"):
            admin.rollback(store, alias)
    assert store.has_collection(v2.target) and store.has_collection(fused_run.target)
    assert f"rolled back: alias '{order[0]}' -> '{source}'" in history_text(store)


@pytest.mark.parametrize("backend", EMBEDDED, indirect=True)
def test_one_migration_two_aliases_each_rolled_back_on_its_own(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    """The README's new-alias path, then the plain evolve through the same adapter."""
    source, live, _ = seed_gallery(backend, digits)
    store = backend.open_store()
    second = backend.unique("second")
    first = run(store, source, [artifact], alias=second)  # the record is started for `second`
    again = run(store, live, [artifact])  # the same migration (same key) moves `live` too
    assert again.migration == first.migration
    key, target = first.migration, first.target
    assert set(aliases_of(store, key)) == {second, live}

    _, message = admin.rollback(store, live)
    assert f"alias '{live}' -> '{source}'" in message
    assert store.alias_target(live) == source and store.alias_target(second) == target
    record = Ledger(store).load(key)
    assert record is not None and record.status == DONE  # `second` still serves the target
    with pytest.raises(InputError, match=f"alias '{live}' still points at '{source}'"):
        admin.prune_plan(store, source)
    # The nightly runs: the rolled-back alias stays back, the other is kept in step.
    with pytest.raises(NothingToDo, match=f"alias '{live}' stays where the rollback put it"):
        run(store, live, [artifact])
    assert store.alias_target(live) == source
    run(store, second, [artifact])
    assert store.alias_target(second) == target

    _, message = admin.rollback(store, second)
    assert store.alias_target(second) == source and store.alias_target(live) == source
    record = Ledger(store).load(key)
    assert record is not None and record.status == ROLLED_BACK
    # --reapply cuts over the alias it is run for, and that alias can be rolled back again.
    from dmu_migrate.evolve.pipeline import EvolveOptions

    run(store, live, [artifact], options=EvolveOptions(batch_size=32, reapply=True))
    assert store.alias_target(live) == target and store.alias_target(second) == source
    assert admin.rollback(store, live)[0] == key and store.alias_target(live) == source


@pytest.mark.parametrize("backend", EMBEDDED, indirect=True)
def test_a_record_of_an_earlier_version_reads_and_its_stuck_alias_rolls_back(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    """Earlier versions kept one alias per record and rolled back that one, whatever was
    named: the record says rolled_back while the alias named still serves the target."""
    source, live, _ = seed_gallery(backend, digits)
    store = backend.open_store()
    second = backend.unique("second")
    first = run(store, source, [artifact], alias=second)
    run(store, live, [artifact])
    key, target = first.migration, first.target
    # What an earlier version left after `rollback --collection <live>`: `second` moved.
    store.point_alias(second, source)
    raw = store.ledger_get(key)
    assert raw is not None
    del raw["moved_aliases"]
    raw["status"], raw["previous_alias_target"] = ROLLED_BACK, source
    raw["runs"].append({"rolled_back_at": raw["finished_at"], "what": f"alias '{second}' -> x"})
    store.ledger_put(key, raw)

    shown = aliases_of(store, key)
    assert set(shown) == {second, live} and all(a["derived"] for a in shown.values())
    assert shown[second]["rolled_back_at"] and shown[live]["rolled_back_at"] is None
    assert shown[live]["points_at"] == target and shown[live]["previous"] == source
    assert "what it named before is unknown" in history_text(store)
    with pytest.raises(InputError, match=f"alias '{second}' of migration .* already rolled back"):
        admin.rollback(store, second)
    _, message = admin.rollback(store, live)
    assert f"alias '{live}' -> '{source}'" in message and store.alias_target(live) == source
    record = Ledger(store).load(key)
    assert record is not None and set(record.moved_aliases) == {second, live}


@pytest.mark.integration  # about 10 s: three evolves through the command line
@pytest.mark.timeout(300)
def test_the_commands_roll_back_the_alias_named_and_list_the_candidates(
    gallery: Gallery, artifact: Artifact, transition: Artifact
) -> None:
    """The issue's run through the command line, on a Milvus Lite file."""
    uri = ["--uri", str(gallery.db)]
    plain = cli("evolve", "--collection", "digits", "--adapter", str(artifact.path), *uri)
    assert plain.exit_code == 0, plain.output
    fused = cli(
        "evolve", "--collection", "digits__v1", "--alias", "digits_fused",
        "--adapter", str(transition.path), *uri,
    )  # fmt: skip
    assert fused.exit_code == 0, fused.output
    expected = {"digits": "digits__v2", "digits_fused": "digits__v2_fused"}
    assert targets(gallery.db) == expected

    assert_clean_error(
        cli("rollback", "--collection", "digits__v1", *uri),
        2,
        "'digits__v1' names 2 migrations",
        "pass --collection ALIAS (one of 'digits', 'digits_fused')",
    )
    assert targets(gallery.db) == expected
    rows = json.loads(cli("status", *uri, "--json").output)
    shown = {a["alias"]: a["points_at"] for r in rows for a in r["aliases"]}
    assert shown == expected
    table = " ".join(cli("status", *uri).output.split())
    assert "digits -> digits__v2" in table and "digits_fused -> digits__v2_fused" in table
    assert "moved alias 'digits_fused'" in cli("history", *uri).output

    back = cli("rollback", "--collection", "digits", *uri)  # the older migration's alias
    assert back.exit_code == 0, back.output
    assert targets(gallery.db) == {"digits": "digits__v1", "digits_fused": "digits__v2_fused"}
    table = " ".join(cli("status", *uri).output.split())
    assert "digits -> digits__v1 (rolled back)" in table, table
    back = cli("rollback", "--collection", "digits_fused", *uri, "--json")
    assert back.exit_code == 0, back.output
    assert json.loads(back.output)["migration"] == "digits__v1->digits__v2_fused"
    assert targets(gallery.db) == {"digits": "digits__v1", "digits_fused": "digits__v1"}
    status = json.loads(cli("status", *uri, "--json").output)
    assert [r["status"] for r in status] == [ROLLED_BACK, ROLLED_BACK]


def targets(db: Path) -> dict[str, str]:
    client = MilvusClient(str(db))
    try:
        return {
            a: str(client.describe_alias(a)["collection_name"]) for a in ("digits", "digits_fused")
        }
    finally:
        client.close()

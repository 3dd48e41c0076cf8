"""The Python API: ``import dmu_migrate`` exports the verbs, docs/api.md documents them.

The verbs are the library half of every command (the CLI is options, one call
and rendering), so the command-line tests exercise them too; here: the
exports and their lazy imports, the documented example run as written, the
defaults shared with the command line, and errors raised instead of printed.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from galleries import Digits, Gallery, create_gallery
from pymilvus import MilvusClient

import dmu_migrate
from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import admin, backfill, evaluation, migration, training
from dmu_migrate.evolve.settings import EvolveSettings
from dmu_migrate.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api.md"
VERBS = [
    "train",
    "evaluate",
    "evolve",
    "verify",
    "status",
    "history",
    "rollback",
    "prune",
    "plan_backfill",
    "backfill",
]
RESULTS = [
    "TrainReport",
    "EvalReport",
    "EvolveResult",
    "EvolvePreview",
    "VerifyResult",
    "Migrations",
    "RollbackResult",
    "PruneResult",
    "RankedIds",
    "BackfillResult",
]
COMMANDS: dict[str, Callable[..., Any]] = {
    "train": training.train,
    "evaluate": evaluation.evaluate,
    "evolve": migration.evolve,
    "verify": admin.verify,
    "status": admin.status,
    "history": admin.history,
    "rollback": admin.rollback,
    "prune": admin.prune,
    "plan_backfill": backfill.plan_backfill,
    "backfill": backfill.backfill,
}
# Output of the command itself, not of the work: --json, and the run report for scrapers
# (--metrics-file records the exit code, which only the command line has).
RENDERING = {"ctx", "as_json", "metrics_file"}
# Verbs whose run settings are one dataclass, taken as **settings and generated as options.
SETTINGS: dict[str, type] = {"train": TrainConfig, "evolve": EvolveSettings}
# Library arguments a command cannot take: callbacks the command fills in itself.
CALLBACKS = {"on_epoch", "on_progress", "confirm"}


def section(text: str, title: str) -> str:
    """The body of the Markdown section headed ``title`` (any level), up to the next heading
    of the same or a higher level; '#' lines inside code blocks are comments, not headings."""
    body: list[str] | None = None
    level = 0
    fenced = False
    for line in text.splitlines():
        fenced ^= line.startswith("```")
        heading = None if fenced else re.match(r"(#+) (.*)", line)
        if heading and body is not None and len(heading.group(1)) <= level:
            break
        if heading and body is None and heading.group(2) == title:
            body, level = [], len(heading.group(1))
        elif body is not None:
            body.append(line)
    assert body is not None, f"docs/api.md has no section '{title}'"
    return "\n".join(body) + "\n"


@pytest.mark.timeout(120)
def test_evolve_path_imports_no_torch() -> None:
    code = (
        "import dmu_migrate, sys; dmu_migrate.evolve; dmu_migrate.verify; "
        "dmu_migrate.status; dmu_migrate.plan_backfill; dmu_migrate.backfill; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(120)
def test_a_qdrant_evolve_path_imports_no_pymilvus() -> None:
    # pymilvus takes over a second to import; Qdrant and Parquet runs never need it.
    code = (
        "import sys, dmu_migrate.api.migrate, dmu_migrate.evolve.pipeline, "
        "dmu_migrate.stores.qdrant; assert 'pymilvus' not in sys.modules, 'pymilvus was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(120)
def test_the_parquet_store_imports_no_qdrant_client() -> None:
    # Each store parses its own filter language; Parquet's borrows nothing from Qdrant's.
    code = (
        "import sys, dmu_migrate.stores.parquet; "
        "assert 'qdrant_client' not in sys.modules, 'qdrant_client was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(120)
def test_exports_listed_and_lazy() -> None:
    assert sorted(dmu_migrate.__all__) == sorted(
        ["__version__", *VERBS, *RESULTS, *(c.__name__ for c in error_classes())]
    )
    listed = dir(dmu_migrate)
    assert set(dmu_migrate.__all__) <= set(listed)
    for name in VERBS:
        verb = getattr(dmu_migrate, name)
        assert inspect.isfunction(verb) and verb.__doc__, name
        assert verb.__module__.startswith("dmu_migrate.api."), name
    for name in RESULTS:
        assert dataclasses.is_dataclass(getattr(dmu_migrate, name)), name
    with pytest.raises(AttributeError):
        dmu_migrate.no_such_verb  # noqa: B018


@pytest.mark.timeout(120)
def test_evolve_is_the_verb_even_when_the_subpackage_is_imported_first() -> None:
    """dmu_migrate/evolve/ is also a subpackage; importing it must not hide the verb.

    Its modules import as 'from dmu_migrate.evolve import pipeline' or 'import
    dmu_migrate.evolve.pipeline'; the attribute path dmu_migrate.evolve.pipeline
    (and 'import ... as') reaches the verb instead, which has no such attribute.
    """
    code = (
        "import dmu_migrate.evolve.pipeline, dmu_migrate, inspect; "
        "from dmu_migrate.evolve import NEW_COLLECTION, pipeline as p; "
        "assert inspect.isfunction(dmu_migrate.evolve), dmu_migrate.evolve; "
        "from dmu_migrate import evolve; assert evolve is dmu_migrate.evolve; "
        "assert p.EvolveResult is dmu_migrate.EvolveResult"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr


def error_classes() -> list[type[dmu_migrate.DmuError]]:
    from dmu_migrate import errors

    return [
        c
        for c in vars(errors).values()
        if isinstance(c, type)
        and issubclass(c, errors.DmuError)
        and c.__module__ == errors.__name__
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("verb", VERBS)
def test_command_and_verb_share_names_and_defaults(verb: str) -> None:
    """Each command option is the verb's keyword argument of that name, with its default."""
    verb_function: Callable[..., Any] = getattr(dmu_migrate, verb)
    library = inspect.signature(verb_function).parameters
    command = inspect.signature(COMMANDS[verb], eval_str=True).parameters
    declared = SETTINGS.get(verb)
    settings = {f.name: f for f in dataclasses.fields(declared)} if declared else {}
    if declared:
        # The generated options are exactly the dataclass's fields, each with its default.
        assert "settings" in library, f"'{verb}' takes no **settings"
        generated = [n for n in command if n in settings]
        assert generated == list(settings), f"'{verb}' options differ from {declared.__name__}"
        defaults = declared()
        for name, field in settings.items():
            assert command[name].default == getattr(defaults, name), f"{verb} --{name}"
            assert field.metadata.get("help"), f"{declared.__name__}.{name} has no help"
            assert name not in library, f"'{verb}' takes {name} twice"
    for name, option in command.items():
        if name in RENDERING or name in settings:
            continue
        assert name in library, f"'{verb}' command option '{name}' is no argument of the verb"
        default = library[name].default
        if isinstance(default, Path) or isinstance(option.default, Path):
            default, expected = str(default), str(option.default)
        else:
            expected = option.default
        assert default == expected, f"{verb}({name}=...): library {default!r}, CLI {expected!r}"
    extra = set(library) - set(command) - CALLBACKS - {"settings"}
    assert not extra, f"'{verb}' takes {extra}, which its command lacks"


@pytest.mark.timeout(60)
def test_page_documents_every_verb_argument_result_field_and_error() -> None:
    text = DOC.read_text()
    shared = section(text, "The verbs").split("### ")[0]
    for name in VERBS:
        body = section(text, name)
        for param in inspect.signature(getattr(dmu_migrate, name)).parameters.values():
            shown = f"`**{param.name}`" if param.kind == param.VAR_KEYWORD else f"`{param.name}`"
            assert shown in body or shown in shared, f"docs/api.md: {name} lacks {shown}"
    for name in RESULTS:
        body = section(text, name)
        for field in dataclasses.fields(getattr(dmu_migrate, name)):
            assert f"`{field.name}`" in body, f"docs/api.md: {name} lacks `{field.name}`"
    errors = section(text, "Errors")
    for cls in error_classes():
        assert re.search(rf"`{cls.__name__}` \| {cls.exit_code} \|", errors), cls.__name__


@pytest.mark.timeout(60)
def test_page_lists_every_evolve_setting_with_its_default() -> None:
    body = section(DOC.read_text(), "evolve")
    rows = dict(re.findall(r"^\| `(\w+)` \| `(.+?)` \|", body, re.M))
    defaults = EvolveSettings()
    for field in dataclasses.fields(EvolveSettings):
        assert field.name in rows, f"docs/api.md: evolve lacks the setting `{field.name}`"
        shown = eval(rows[field.name], {"Path": Path})  # noqa: S307 - our own page
        assert shown == getattr(defaults, field.name), f"docs/api.md: evolve `{field.name}`"


@pytest.mark.timeout(60)
def test_readme_links_the_page() -> None:
    assert "[docs/api.md](docs/api.md)" in (ROOT / "README.md").read_text()


def example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", section(DOC.read_text(), "Example"), re.S)
    assert len(blocks) == 1, "docs/api.md's Example has one python block"
    return str(blocks[0])


def alias_target(db: Path, alias: str) -> str:
    client = MilvusClient(str(db))
    try:
        return str(client.describe_alias(alias)["collection_name"])
    finally:
        client.close()


@pytest.mark.timeout(900)
def test_documented_example_runs_as_written(
    tmp_path: Path,
    digits: Digits,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The page's example, given the variables it names, with the digits tables."""
    db = tmp_path / "gallery.db"
    create_gallery(db, digits)
    monkeypatch.chdir(tmp_path)
    variables: dict[str, Any] = {
        "train_table": digits.train_path,
        "eval_table": digits.eval_path,
        "db": str(db),
    }
    exec(compile(example_code(), str(DOC), "exec"), variables)
    printed = capsys.readouterr().out
    assert "deploy:" in printed and "refused:" in printed and "already rolled back" in printed
    assert (tmp_path / "adapters" / "digits-v2" / "adapter.onnx").is_file()
    # Rolled back: the alias serves the old vectors again, the evolved collection is kept.
    assert alias_target(db, "digits") == "digits__v1"
    rows = dmu_migrate.history(uri=str(db), collection="digits").migrations
    assert [r["status"] for r in rows] == ["rolled_back"]
    assert variables["result"].rows_done == len(digits.y_te[~digits.is_query])
    assert variables["checked"].missing == 0


@pytest.mark.timeout(300)
def test_verbs_raise_the_error_tree_and_print_nothing(
    gallery: Gallery, artifact: Artifact, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = str(gallery.db)
    calls = [
        (dmu_migrate.InputError, lambda: dmu_migrate.evolve("digits", artifact.path, batch_size=0)),
        (
            dmu_migrate.InputError,
            lambda: dmu_migrate.evolve("digits", artifact.path, uri=uri, shard="3/2"),
        ),
        (dmu_migrate.InputError, lambda: dmu_migrate.backfill("digits", uri=uri)),
        (dmu_migrate.InputError, lambda: dmu_migrate.rollback("digits", uri=uri)),
        (dmu_migrate.InputError, lambda: dmu_migrate.prune("digits__v1", uri=uri, yes=True)),
        (dmu_migrate.InputError, lambda: dmu_migrate.train("t.parquet", "x", no_such=1)),
        (
            dmu_migrate.InputError,
            lambda: dmu_migrate.evaluate("e.parquet", artifact.path, plot=tmp_path / "c.jpg"),
        ),
        (
            dmu_migrate.StoreError,
            lambda: dmu_migrate.verify("digits__v1", artifact.path, uri=uri, alias="digits"),
        ),
        (dmu_migrate.ArtifactError, lambda: dmu_migrate.evolve("digits", tmp_path, uri=uri)),
    ]
    for error, call in calls:
        with pytest.raises(error) as raised:
            call()
        assert "\n" not in str(raised.value)
    assert dmu_migrate.status(uri=uri).migrations == []
    assert capsys.readouterr() == ("", "")


@pytest.mark.timeout(300)
def test_prune_drops_nothing_unless_confirmed(
    gallery: Gallery, artifact: Artifact, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = str(gallery.db)
    preview = dmu_migrate.evolve("digits", artifact.path, uri=uri, dry_run=True)
    assert isinstance(preview, dmu_migrate.EvolvePreview) and preview.estimate.rows > 0
    assert dmu_migrate.status(uri=uri).migrations == []  # the dry run changed nothing
    seen: list[str] = []
    result = dmu_migrate.evolve(
        "digits", [artifact.path], uri=uri, on_progress=lambda p, d, t: None
    )
    assert isinstance(result, dmu_migrate.EvolveResult) and result.outcome == "done"
    with pytest.raises(dmu_migrate.InputError, match="yes=True"):
        dmu_migrate.prune("digits__v1", uri=uri)

    def say_no(what: str) -> bool:
        seen.append(what)
        return False

    kept = dmu_migrate.prune("digits__v1", uri=uri, confirm=say_no)
    assert not kept.pruned and "drop collection 'digits__v1'" in seen[0]
    dropped = dmu_migrate.prune("digits__v1", uri=uri, yes=True)
    assert dropped.pruned and dropped.migration == result.migration
    client = MilvusClient(str(gallery.db))
    try:
        assert not client.has_collection("digits__v1")
    finally:
        client.close()
    assert capsys.readouterr() == ("", "")

"""evolve's run settings, written once (dmu_migrate/evolve/settings.py), and --config.

The flags are generated from EvolveSettings, so these tests check the generated
command against the dataclass, and a TOML file against the flags: file values
apply, typed flags win, and a bad file is one line before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from galleries import Gallery
from helpers import assert_clean_error
from migrations import evolve_args
from pymilvus import MilvusClient
from typer.testing import CliRunner, Result

import dmu_migrate
from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.evolve.pipeline import EvolveOptions
from dmu_migrate.evolve.settings import EvolveSettings
from dmu_migrate.settings import flag

pytestmark = pytest.mark.timeout(300)
runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def evolve_command() -> Any:
    # typer ships its own copy of click: its classes are not click's, so no isinstance.
    return typer.main.get_command(app).commands["evolve"]  # type: ignore[attr-defined]


def test_generated_options_are_the_dataclass_fields() -> None:
    params = {p.name: p for p in evolve_command().params if p.name}
    defaults = EvolveSettings()
    for field in dataclasses.fields(EvolveSettings):
        option = params.get(field.name)
        assert option is not None and option.param_type_name == "option", field.name
        assert flag(field.name) in option.opts
        assert option.default == getattr(defaults, field.name) or (
            option.default == str(getattr(defaults, field.name))  # click keeps a path as str
        ), field.name
        assert option.help and option.help == field.metadata["help"], field.name
        allowed = field.metadata["choices"]
        if allowed:
            assert option.metavar == "[" + "|".join(allowed) + "]", field.name
        bounds = field.metadata["bounds"]
        if bounds is not None:
            assert bounds.text() in option.help, field.name
    explicit = {"collection", "adapter", "uri", "token", "target_token", "config_file"}
    explicit |= {"as_json", "metrics_file"}
    fields = {f.name for f in dataclasses.fields(EvolveSettings)}
    assert set(params) - fields - {"verbose", "quiet", "log_format", "help"} == explicit


def test_pipeline_options_default_to_the_settings() -> None:
    """EvolveOptions (the pipeline's own, for direct callers) must not drift from the settings."""
    options, settings = EvolveOptions(), EvolveSettings()
    assert options.snapshot_root == settings.snapshot_dir
    assert (options.retry.max_retries, options.retry.timeout) == (
        settings.max_retries,
        settings.timeout,
    )
    for name in (
        "batch_size",
        "max_seconds",
        "take_over",
        "restart",
        "skip_bad_vectors",
        "read_ahead",
        "full_verify",
        "reapply",
        "write_path",
        "bulk_storage",
    ):
        assert getattr(options, name) == getattr(settings, name), name


def dry_run_plan(result: Result) -> dict:
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output[result.output.index("{") :]))


def nothing_written(gallery: Gallery) -> None:
    client = MilvusClient(str(gallery.db))
    try:
        assert not client.has_collection("digits__v2")
    finally:
        client.close()
    assert dmu_migrate.status(uri=str(gallery.db)).migrations == []


def test_config_file_applies_and_typed_flags_win(
    gallery: Gallery, artifact: Artifact, tmp_path: Path
) -> None:
    config = tmp_path / "evolve.toml"
    config.write_text('[evolve]\ndry_run = true\nbatch_size = 64\nalias = "from_file"\n')
    from_file = dry_run_plan(
        cli(*evolve_args(gallery, artifact, "--config", str(config), "--json"))
    )
    assert from_file["dry_run"] and from_file["alias"] == "from_file"
    assert from_file["estimate"]["sample_rows"] == 64
    typed = dry_run_plan(
        cli(
            *evolve_args(gallery, artifact, "--config", str(config), "--json"),
            "--batch-size",
            "32",
            "--alias",
            "typed",
        )
    )
    assert typed["alias"] == "typed" and typed["estimate"]["sample_rows"] == 32
    # A typed flag that equals its default still overrides the file.
    default = cli(
        *evolve_args(gallery, artifact, "--config", str(config), "--json", "--batch-size", "8192")
    )
    assert dry_run_plan(default)["estimate"]["sample_rows"] == len(gallery.ids)
    nothing_written(gallery)  # every run above was a dry run, from the file
    config.write_text("max_seconds = 0\n")  # top level works too: stop at once, resumably
    stopped = cli(*evolve_args(gallery, artifact, "--config", str(config)))
    assert stopped.exit_code == 75, stopped.output
    done = cli(*evolve_args(gallery, artifact, "--config", str(config), "--max-seconds", "600"))
    assert done.exit_code == 0, done.output


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("batch_sise = 64\n", ["unknown key 'batch_sise'", "batch_size", "evolve.toml"]),
        ('batch_size = "64"\n', ["'batch_size' is str", "expected int", "evolve.toml"]),
        ("take_over = 1\n", ["'take_over' is int", "expected bool"]),
        ("shards = true\n", ["'shards' is bool", "expected int"]),
        ("batch_size = 0\n", ["--batch-size must be between 1 and 16384", "evolve.toml"]),
        ('strategy = "copy"\n', ["unknown --strategy 'copy'", "new-collection", "evolve.toml"]),
        ("timeout = 0.5\n", ["--timeout must be between 1 and 86400", "evolve.toml"]),
        ("batch_size = \n", ["is not valid TOML", "evolve.toml"]),
    ],
)
def test_a_bad_config_file_is_one_line_and_writes_nothing(
    gallery: Gallery, artifact: Artifact, tmp_path: Path, text: str, needles: list[str]
) -> None:
    config = tmp_path / "evolve.toml"
    config.write_text(text)
    result = cli(*evolve_args(gallery, artifact, "--config", str(config)))
    assert_clean_error(result, 2, *needles)
    nothing_written(gallery)


def test_a_typed_flag_mends_a_bad_file_value(
    gallery: Gallery, artifact: Artifact, tmp_path: Path
) -> None:
    config = tmp_path / "evolve.toml"
    config.write_text("batch_size = 0\n")
    args = evolve_args(gallery, artifact, "--config", str(config), "--dry-run")
    result = cli(*args, "--batch-size", "64")
    assert result.exit_code == 0, result.output


def test_a_missing_config_file_is_one_line(gallery: Gallery, artifact: Artifact) -> None:
    result = cli(*evolve_args(gallery, artifact, "--config", "no-such.toml"))
    assert_clean_error(result, 2, "--config 'no-such.toml' does not exist")


def test_the_verb_takes_settings_and_a_file(
    gallery: Gallery, artifact: Artifact, tmp_path: Path
) -> None:
    uri = str(gallery.db)
    with pytest.raises(dmu_migrate.InputError) as raised:
        dmu_migrate.evolve("digits", artifact.path, uri=uri, batch_sise=64)
    message = str(raised.value)
    assert "\n" not in message and "batch_sise" in message and "batch_size" in message
    with pytest.raises(dmu_migrate.InputError, match="--workers must be between 1 and 256"):
        dmu_migrate.evolve("digits", artifact.path, uri=uri, workers=0)
    with pytest.raises(dmu_migrate.InputError, match="--threads must be a number"):
        dmu_migrate.evolve("digits", artifact.path, uri=uri, threads="4")
    config = tmp_path / "evolve.toml"
    config.write_text("dry_run = true\nbatch_size = 16\n")
    preview = dmu_migrate.evolve("digits", artifact.path, uri=uri, config_file=config)
    assert isinstance(preview, dmu_migrate.EvolvePreview) and preview.estimate.sample_rows == 16
    preview = dmu_migrate.evolve(
        "digits", artifact.path, uri=uri, config_file=str(config), batch_size=8
    )
    assert isinstance(preview, dmu_migrate.EvolvePreview) and preview.estimate.sample_rows == 8
    nothing_written(gallery)

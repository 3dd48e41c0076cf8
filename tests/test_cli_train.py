"""`dmu-migrate train` flags: config file precedence, methods, and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from galleries import Digits
from helpers import assert_clean_error
from typer.testing import CliRunner

from dmu_migrate.cli import app
from dmu_migrate.data import read_table, write_table

runner = CliRunner()
SMALL = ["--hidden", "32", "--adapter-hidden", "32", "--batch-size", "128", "--device", "cpu"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_args(table: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["train", str(table), "--name", name, "--out-dir", str(out), *SMALL, *extra]


def manifest(out: Path, name: str) -> dict:
    return json.loads((out / name / "manifest.json").read_text())


def test_config_file_sets_values_and_typed_flags_override_it(
    tmp_path: Path, digits: Digits
) -> None:
    config = tmp_path / "upgrade.toml"
    config.write_text(
        '[train]\nmethod = "bct"\nepochs = 2\ngamma = 3\ndiscriminativeness = "entropy"\nseed = 4\n'
    )
    args = train_args(digits.train_path, tmp_path, "c", "--config", str(config), "--epochs", "1")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path, "c")
    training = m["training"]
    assert m["method"] == "bct"  # from the file
    assert training["config"]["epochs"] == 1  # the typed flag wins
    assert training["config"]["discriminativeness"] == "entropy" and training["config"]["seed"] == 4
    assert training["config"]["gamma"] == 0.0  # bct implies uniform inheritance
    assert len(training["log"]) == 1
    assert "bct" in result.output and "on cpu" in result.output


def test_flags_left_at_their_default_do_not_mask_the_config_file(
    tmp_path: Path, digits: Digits
) -> None:
    config = tmp_path / "upgrade.toml"
    config.write_text("epochs = 1\nbatch_size = 64\ndetach = false\nimage_shape = [1, 8, 8]\n")
    args = train_args(digits.train_path, tmp_path, "d", "--config", str(config), "--model", "cnn")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = manifest(tmp_path, "d")["training"]["config"]
    # --batch-size 128 was typed (SMALL), so it wins; detach and image_shape come from the file.
    assert cfg["batch_size"] == 128 and cfg["detach"] is False and cfg["image_shape"] == [1, 8, 8]
    assert cfg["model"] == "cnn" and cfg["epochs"] == 1


def test_adapter_method_from_the_command_line(tmp_path: Path, digits: Digits) -> None:
    table = read_table(digits.train_path)
    pairs = tmp_path / "pairs.parquet"
    write_table(pairs, {"label": table.labels, "old": table.old, "emb_v2": table.x})
    args = train_args(pairs, tmp_path, "p", "--method", "adapter", "--adapter-kind", "affine")
    result = runner.invoke(app, [*args, "--new-col", "emb_v2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["method"] == "adapter:affine" and payload["input_dim"] is None
    assert payload["new_dim"] == 64 and set(payload["files"]) == {
        "adapter.onnx",
        "backfill_score.onnx",
    }
    # Procrustes cannot rotate 64-d old vectors into a 32-d space.
    narrow = train_args(pairs, tmp_path, "q", "--method", "adapter", "--adapter-kind", "procrustes")
    result = runner.invoke(app, [*narrow, "--old-col", "emb_v2", "--new-col", "old"])
    assert_clean_error(result, 2, "--adapter-kind procrustes", "affine or mlp")


def test_plugin_model_from_the_command_line(
    tmp_path: Path, digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_nets.py").write_text(
        "from torch import nn\n"
        "def build(input_dim, output_dim):\n"
        "    return nn.Sequential(nn.Linear(input_dim, 48), nn.Tanh(), nn.Linear(48, output_dim))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = train_args(digits.train_path, tmp_path, "g", "--model", "my_nets:build", "--epochs", "1")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path, "g")
    assert m["training"]["config"]["model"] == "my_nets:build"
    assert m["parity"]["new_model_max_abs_diff"] < 1e-4


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--method", "arcface"], ["unknown --method 'arcface'", "independent"]),
        (["--adapter-kind", "pca"], ["--adapter-kind 'pca'", "procrustes"]),
        (["--discriminativeness", "q"], ["--discriminativeness 'q'", "entropy"]),
        (["--device", "tpu"], ["--device 'tpu'", "auto"]),
        (["--model", "cnn"], ["--model cnn needs --image-shape"]),
        (["--model", "cnn", "--image-shape", "1,28,28"], ["784 pixels", "C*H*W = 64"]),
        (["--model", "cnn", "--image-shape", "a,b"], ["--image-shape 'a,b'"]),
        (["--model", "no_such_pkg.nets:build"], ["cannot import 'no_such_pkg.nets'"]),
        (["--model", "json:nope"], ["has no callable 'nope'"]),
        (["--model", "json:dumps"], ["factory(input_dim=..., output_dim=...)"]),
        (["--model", "collections:OrderedDict"], ["not a torch nn.Module"]),
        (["--val-fraction", "1.5"], ["--val-fraction must be in [0, 1)"]),
        (["--val-fraction", "0.001"], ["--val-fraction 0.001 holds out no rows"]),
        (["--dim", "16"], ["--dim must equal the old dimension 32", "--method independent"]),
        (["--resume"], ["--resume: no checkpoint"]),
        (["--method", "adapter"], ["no column 'new'", "--new-col"]),
        (["--epochs", "0"], ["--epochs must be > 0"]),
    ],
)
def test_bad_values_get_one_line_naming_the_flag(
    tmp_path: Path, digits: Digits, flags: list[str], needles: list[str]
) -> None:
    result = runner.invoke(app, train_args(digits.train_path, tmp_path, "bad", *flags))
    assert_clean_error(result, 2, *needles)
    assert not (tmp_path / "bad").exists()


def test_plugin_with_wrong_output_shape_is_refused(
    tmp_path: Path, digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad_nets.py").write_text(
        "from torch import nn\ndef build(input_dim, output_dim):\n    return nn.Linear(input_dim, 7)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = runner.invoke(
        app, train_args(digits.train_path, tmp_path, "w", "--model", "bad_nets:build")
    )
    assert_clean_error(result, 2, "--model 'bad_nets:build' maps 2 rows", "(2, 32)")


def test_plugin_that_rejects_the_input_size_says_why(
    tmp_path: Path, digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "img_nets.py").write_text(
        "def build(input_dim, output_dim):\n"
        "    raise ValueError(f'x has {input_dim} values, not 28*28 pixels')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = runner.invoke(
        app, train_args(digits.train_path, tmp_path, "w", "--model", "img_nets:build")
    )
    assert_clean_error(result, 2, "refused input_dim=64, output_dim=32", "not 28*28 pixels")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("epochs = 2\nlearning_rate = 1\n", ["unknown key 'learning_rate'", "lr"]),
        ('epochs = "ten"\n', ["'epochs' is str", "expected int"]),
        ("gamma = true\n", ["'gamma' is bool"]),
        ("epochs = [\n", ["not valid TOML"]),
    ],
)
def test_bad_config_files_are_refused(
    tmp_path: Path, digits: Digits, text: str, needles: list[str]
) -> None:
    config = tmp_path / "upgrade.toml"
    config.write_text(text)
    result = runner.invoke(
        app, train_args(digits.train_path, tmp_path, "f", "--config", str(config))
    )
    assert_clean_error(result, 2, "--config", *needles)


def test_missing_config_file_is_refused(tmp_path: Path, digits: Digits) -> None:
    args = train_args(digits.train_path, tmp_path, "m", "--config", str(tmp_path / "nope.toml"))
    assert_clean_error(runner.invoke(app, args), 2, "--config", "does not exist")

"""Artifact manifest: checksums written, checked on load, and every refusal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dmu_migrate.artifact import (
    ADAPTER,
    FORMAT,
    MANIFEST,
    NEW_MODEL,
    Manifest,
    check_version_id,
    load_artifact,
    write_manifest,
)
from dmu_migrate.errors import ArtifactError, InputError

ADAPTER_BYTES = b"not really onnx, only checksummed" * 10
NEW_MODEL_BYTES = b"\x00\x01new model bytes\xff" * 7


def manifest() -> Manifest:
    return Manifest(
        name="demo",
        from_version="v1",
        to_version="v2",
        method="dmu",
        old_dim=4,
        new_dim=8,
        input_dim=None,
        training={"epochs": 3, "gamma": 1.0},
        parity={"max_abs_diff": 1e-6},
    )


def make_artifact(directory: Path, with_new_model: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ADAPTER).write_bytes(ADAPTER_BYTES)
    m = manifest()
    if with_new_model:
        (directory / NEW_MODEL).write_bytes(NEW_MODEL_BYTES)
        m.input_dim = 16
    write_manifest(directory, m)
    return directory


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / MANIFEST
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


def test_write_manifest_records_checksums_of_present_files(tmp_path: Path) -> None:
    d = tmp_path / "art"
    d.mkdir()
    (d / ADAPTER).write_bytes(ADAPTER_BYTES)
    written = write_manifest(d, manifest())
    assert written == d / MANIFEST
    assert not (d / (MANIFEST + ".tmp")).exists()
    raw = json.loads(written.read_text())
    assert raw["files"] == {ADAPTER: sha(ADAPTER_BYTES)}  # no new_model.onnx on disk
    assert raw["format"] == FORMAT


def test_round_trip_adapter_only(tmp_path: Path) -> None:
    d = make_artifact(tmp_path / "art")
    art = load_artifact(str(d))
    assert art.path == d
    expected = manifest()
    expected.files = {ADAPTER: sha(ADAPTER_BYTES)}
    assert art.manifest == expected  # every field, training and parity dicts included
    assert art.adapter_path == d / ADAPTER
    assert art.new_model_path is None
    assert art.label == "'demo' (v1 -> v2)"


def test_round_trip_with_new_model(tmp_path: Path) -> None:
    d = make_artifact(tmp_path / "art", with_new_model=True)
    art = load_artifact(d)
    assert art.manifest.files == {ADAPTER: sha(ADAPTER_BYTES), NEW_MODEL: sha(NEW_MODEL_BYTES)}
    assert art.manifest.input_dim == 16
    assert art.new_model_path == d / NEW_MODEL


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"nowhere.*no manifest\.json"):
        load_artifact(tmp_path / "nowhere")


def test_directory_without_manifest(tmp_path: Path) -> None:
    d = tmp_path / "art"
    d.mkdir()
    (d / ADAPTER).write_bytes(ADAPTER_BYTES)
    with pytest.raises(ArtifactError, match="not an upgrade artifact"):
        load_artifact(d)


def test_unreadable_manifest_json(tmp_path: Path) -> None:
    d = make_artifact(tmp_path / "art")
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        load_artifact(d)


def test_manifest_with_unknown_key(tmp_path: Path) -> None:
    d = make_artifact(tmp_path / "art")
    edit_manifest(d, surprise=1)
    with pytest.raises(ArtifactError, match="unreadable"):
        load_artifact(d)


def test_tampered_file_same_length(tmp_path: Path) -> None:
    d = make_artifact(tmp_path / "art")
    data = bytearray(ADAPTER_BYTES)
    data[5] ^= 0x01
    (d / ADAPTER).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"adapter\.onnx.*does not match the checksum"):
        load_artifact(d)


def test_truncated_new_model(tmp_path: Path) -> None:
    d = make_artifact(tmp_path / "art", with_new_model=True)
    (d / NEW_MODEL).write_bytes(NEW_MODEL_BYTES[:-3])
    with pytest.raises(ArtifactError, match=r"new_model\.onnx.*does not match the checksum"):
        load_artifact(d)


def test_missing_listed_file(tmp_path: Path) -> None:
    d = make_artifact(tmp_path / "art", with_new_model=True)
    (d / NEW_MODEL).unlink()
    with pytest.raises(ArtifactError, match=r"missing new_model\.onnx"):
        load_artifact(d)


def test_manifest_that_lists_no_adapter(tmp_path: Path) -> None:
    d = make_artifact(tmp_path / "art")
    edit_manifest(d, files={})
    with pytest.raises(ArtifactError, match=r"lists no adapter\.onnx"):
        load_artifact(d)


def test_wrong_format_string(tmp_path: Path) -> None:
    d = make_artifact(tmp_path / "art")
    edit_manifest(d, format="dmu-migrate/0")
    with pytest.raises(ArtifactError, match=r"format 'dmu-migrate/0'.*reads 'dmu-migrate/1'"):
        load_artifact(d)


@pytest.mark.parametrize("value", ["v2", "V", "model_2024_01", "a" * 64])
def test_check_version_id_accepts(value: str) -> None:
    assert check_version_id(value, "--to-version") == value


@pytest.mark.parametrize("value", ["2v", "a-b", "", "_v2", "v 2", "v2.1", "a" * 65])
def test_check_version_id_rejects(value: str) -> None:
    with pytest.raises(InputError, match=r"--to-version '.*' is not a valid version id"):
        check_version_id(value, "--to-version")


def test_check_version_id_rejects_trailing_newline() -> None:
    with pytest.raises(InputError):
        check_version_id("v2\n", "--to-version")


def test_write_manifest_leaves_the_given_manifest_alone(tmp_path: Path) -> None:
    """Copying a loaded artifact without one of its files must not change the loaded one."""
    source = load_artifact(make_artifact(tmp_path / "a", with_new_model=True))
    copy = tmp_path / "b"
    copy.mkdir()
    (copy / ADAPTER).write_bytes(ADAPTER_BYTES)
    write_manifest(copy, source.manifest)
    assert source.new_model_path is not None  # still listed in the loaded artifact
    assert load_artifact(copy).new_model_path is None

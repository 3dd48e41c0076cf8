"""The upgrade artifact: a directory with ``manifest.json`` and ONNX files.

    adapters/<name>/
      manifest.json     versions, dims, metric, checksums, training summary
      adapter.onnx      stored old vector -> evolved vector (input "old", output "evolved")
      new_model.onnx    new-model input -> new embedding (input "x", output "embedding")
      backfill_score.onnx  stored old vector -> (n, 1) score, higher = re-embed sooner
                        (input "old", output "score"; optional: older artifacts lack it)
      item_model.onnx   calibrated artifacts only (training/calibrated.py): new-model input
                        -> the stored vector of a native row; new_model.onnx is then the
                        query encoder

Both embedding models L2-normalise their output, so the store's metric is cosine / IP.
Reading an artifact checks every file against its recorded checksum, so a
truncated copy or a swapped file is refused before any vector is written.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dmu_migrate import __version__
from dmu_migrate.data import file_sha256
from dmu_migrate.errors import ArtifactError, InputError

FORMAT = "dmu-migrate/1"
MANIFEST = "manifest.json"
ADAPTER = "adapter.onnx"
NEW_MODEL = "new_model.onnx"
BACKFILL_SCORE = "backfill_score.onnx"
ITEM_MODEL = "item_model.onnx"  # calibrated artifacts: the encoder of native rows
_VERSION_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def check_version_id(value: str, what: str) -> str:
    """Version ids become collection-name suffixes, so they follow Milvus's name rules."""
    if not _VERSION_RE.fullmatch(value):
        raise InputError(
            f"{what} '{value}' is not a valid version id; use a letter then letters, digits "
            f"or '_' (at most 64), e.g. 'v2'"
        )
    return value


@dataclass
class Manifest:
    name: str
    from_version: str
    to_version: str
    method: str
    old_dim: int
    new_dim: int
    input_dim: int | None  # None when no new_model.onnx ships in the artifact
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    metric: str = "cosine"
    normalized: bool = True
    opset: int = 17
    training: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    # Retrieval on identities held out of training: {"settings": {setting: {"R@1", "mAP"}},
    # "rows", "identities", "verdict"}; empty when nothing was held out (quality.py).
    quality: dict[str, Any] = field(default_factory=dict)
    # The score offset of evolved items in a mixed gallery, fitted on the held-out identities
    # (calibration.py): {"offset", "shares", "draws", "queries", "R@1"}; empty, or a manifest
    # written before it existed: offset 0, searched exactly as before.
    calibration: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    tool_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True, default=str)


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: Manifest

    @property
    def adapter_path(self) -> Path:
        return self.path / ADAPTER

    @property
    def new_model_path(self) -> Path | None:
        return self.path / NEW_MODEL if NEW_MODEL in self.manifest.files else None

    @property
    def item_model_path(self) -> Path | None:
        """The encoder of stored native rows, where it differs from the query encoder
        (a calibrated artifact, training/calibrated.py); else new_model.onnx serves both."""
        return self.path / ITEM_MODEL if ITEM_MODEL in self.manifest.files else None

    @property
    def backfill_score_path(self) -> Path | None:
        """The partial-backfill ranking model (backfill_curve.py), if the artifact ships one."""
        return self.path / BACKFILL_SCORE if BACKFILL_SCORE in self.manifest.files else None

    @property
    def validated(self) -> dict[str, dict[str, float]] | None:
        """R@1/mAP per setting measured at training on held-out identities, if any."""
        settings = self.manifest.quality.get("settings") if self.manifest.quality else None
        return settings if isinstance(settings, dict) and settings else None

    @property
    def offset(self) -> float:
        """The calibrated score offset of evolved items over native ones (0: none)."""
        value = self.manifest.calibration.get("offset", 0.0)
        return float(value) if _number(value) else 0.0

    @property
    def label(self) -> str:
        return (
            f"'{self.manifest.name}' ({self.manifest.from_version} -> {self.manifest.to_version})"
        )


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A directory beside ``target`` to build an artifact in, moved into place whole.

    The artifact appears under its real name only when the block succeeds (replacing
    what was there), so a failed export never leaves a half-written one behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Record checksums of the files present and write the manifest last.

    The manifest is written to a temporary name and renamed, so a crash leaves
    either no artifact or a complete one, never a manifest pointing at
    half-written models. ``manifest`` itself is left as it is: it may be the
    manifest of a loaded artifact whose files are elsewhere.
    """
    files = {
        name: file_sha256(directory / name)
        for name in (ADAPTER, NEW_MODEL, BACKFILL_SCORE, ITEM_MODEL)
        if (directory / name).exists()
    }
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(replace(manifest, files=files).to_json() + "\n")
    tmp.replace(directory / MANIFEST)
    return directory / MANIFEST


def load_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(
            f"'{path}' is not an upgrade artifact (no {MANIFEST}); "
            f"point --adapter at a directory written by 'dmu-migrate train'"
        )
    try:
        raw = json.loads(manifest_path.read_text())
        check_types(manifest_path, raw)
        manifest = Manifest(**raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise ArtifactError(
            f"manifest '{manifest_path}' is unreadable ({exc}); re-run train"
        ) from exc
    if manifest.format != FORMAT:
        raise ArtifactError(
            f"artifact '{path}' has format '{manifest.format}', this tool reads '{FORMAT}'; "
            f"re-export it with this version of dmu-migrate"
        )
    if ADAPTER not in manifest.files:
        raise ArtifactError(f"artifact '{path}' lists no {ADAPTER}; re-run train")
    for name, digest in manifest.files.items():
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"artifact '{path}' is missing {name}; copy the whole directory")
        if file_sha256(file) != digest:
            raise ArtifactError(
                f"{name} in '{path}' does not match the checksum in its manifest "
                f"(changed or truncated); copy the artifact again or re-run train"
            )
    check_manifest(path, manifest)
    return Artifact(path, manifest)


# What each manifest key holds; a hand-edited or damaged manifest is refused by key.
_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "from_version": (str,),
    "to_version": (str,),
    "method": (str,),
    "old_dim": (int,),
    "new_dim": (int,),
    "input_dim": (int, type(None)),
    "files": (dict,),
    "metric": (str,),
    "normalized": (bool,),
    "opset": (int,),
    "training": (dict,),
    "parity": (dict,),
    "quality": (dict,),
    "calibration": (dict,),
    "format": (str,),
    "tool_version": (str,),
}
_WORDS = {str: "a string", int: "an integer", dict: "an object", bool: "true or false"}


def check_types(manifest_path: Path, raw: Any) -> None:
    """Every key the right JSON type (and the nested figures the gate reads), or one line
    naming the file, the key and what it should hold."""

    def refuse(key: str, value: Any, should: str) -> ArtifactError:
        return ArtifactError(
            f"manifest '{manifest_path}' has {key} = {json.dumps(value)}, which should be "
            f"{should}; the file was edited or damaged: copy the artifact again or re-export "
            f"the artifact with train"
        )

    if not isinstance(raw, dict):
        raise TypeError(f"a JSON object expected, got {type(raw).__name__}")
    for key, kinds in _TYPES.items():
        if key not in raw:
            continue  # a missing key is Manifest's to name
        value = raw[key]
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise refuse(key, value, " or ".join(_WORDS.get(k, "null") for k in kinds))
    for name, digest in (raw.get("files") or {}).items():
        if not isinstance(digest, str):
            raise refuse(f"files.{name}", digest, "a sha256 string")
    quality = raw.get("quality") or {}
    settings = quality.get("settings")
    if settings is not None:
        if not isinstance(settings, dict):
            raise refuse("quality.settings", settings, "an object of settings")
        for setting, figures in settings.items():
            if not isinstance(figures, dict) or not all(_number(v) for v in figures.values()):
                raise refuse(f"quality.settings.{setting}", figures, "an object of numbers")
    fusion = quality.get("fusion")
    if fusion is not None and (
        not isinstance(fusion, dict) or not all(_number(v) for v in fusion.values())
    ):
        raise refuse("quality.fusion", fusion, "an object of numbers")

    offset = (raw.get("calibration") or {}).get("offset", 0.0)
    if not _number(offset) or not 0.0 <= offset < 0.5:
        raise refuse("calibration.offset", offset, "a number in [0, 0.5)")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_manifest(path: Path, m: Manifest) -> None:
    """Fields that name collections or size vectors must be what they claim to be."""
    for what, version in (("from_version", m.from_version), ("to_version", m.to_version)):
        if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
            raise ArtifactError(
                f"manifest of '{path}' has {what} {version!r}, not a version id (a letter, then "
                f"letters, digits or '_'); re-export the artifact"
            )
    for what, dim in (("old_dim", m.old_dim), ("new_dim", m.new_dim)):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ArtifactError(
                f"manifest of '{path}' has {what} {dim!r}, not a positive integer; "
                f"re-export the artifact"
            )

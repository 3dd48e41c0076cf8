"""The run settings of ``evolve``, each written once: default, help, choices and range.

``dmu-migrate evolve``'s flags are generated from these fields (cli/common.py),
the verb takes them as ``**settings``, and ``evolve --config FILE.toml`` reads
them from a file, at top level or under ``[evolve]``:

    batch_size = 4096
    max_seconds = 3000
    strategy = "new-field"

The connection (collection, adapter, uri, token) is no setting: it is written
on each call. This module imports nothing heavy, so --help stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dmu_migrate.errors import InputError
from dmu_migrate.evolve import ENGINES, INSERT, NEW_COLLECTION, STRATEGIES, WRITE_PATHS
from dmu_migrate.settings import Bounds, build, check_value, load_toml, setting, unknown_names

# Milvus answers at most 16,384 rows per query page (its query window); every store
# reads in pages of batch_size rows, so it cannot be larger.
MAX_BATCH = 16384
# Wide rows get fewer per batch: a few batches are in flight at once (peak memory), and
# requests past a few tens of MB hit servers' gRPC limits (64 MiB on Milvus 2.x).
MAX_BATCH_BYTES = 8 << 20


def batch_rows(batch_size: int, dim: int) -> int:
    """Rows per batch: --batch-size, fewer when rows of ``dim`` floats would pass the cap."""
    return max(1, min(batch_size, MAX_BATCH_BYTES // (4 * dim)))


@dataclass(frozen=True)
class EvolveSettings:
    strategy: str = setting(
        NEW_COLLECTION,
        "new-collection (copy + alias), new-field (vector beside the old one) or in-place "
        "(overwrite after a snapshot).",
        STRATEGIES,
    )
    alias: str | None = setting(
        None,
        "Alias to point at the evolved collection (default: --collection when it is an alias, "
        "or with --target-uri).",
    )
    target_uri: str | None = setting(
        None,
        "Write the evolved collection, its ledger and alias into this other store (Milvus, "
        "Qdrant or parquet:DIR URI, as --uri); credentials from --target-token.",
    )
    vector_field: str | None = setting(None, "Vector field to evolve.")
    target_field: str | None = setting(
        None, "new-field: name of the new vector field (default: <field>_<version>)."
    )
    filter: str | None = setting(
        None,
        "Evolve only matching rows (Milvus expression or Qdrant filter JSON); the alias is "
        "not moved.",
    )
    batch_size: int = setting(
        8192,
        "Rows per read/write batch, at most Milvus's query window; wide rows get fewer, "
        "at most 8 MiB a batch.",
        bounds=Bounds(1, MAX_BATCH, why="Milvus's query window"),
    )
    threads: int = setting(
        0, "onnxruntime threads; 0 = all cores.", bounds=Bounds(0, 256, why="0 uses every core")
    )
    read_ahead: int = setting(
        1,
        "Batches read and transformed ahead of the writer (memory: a few batches per unit); "
        "0 reads, transforms and writes in turn.",
        bounds=Bounds(0, 64),
    )
    full_verify: bool = setting(
        False,
        "Compare every id of source and target before cut-over, even after a whole pass in "
        "one run whose counts add up.",
    )
    max_seconds: float | None = setting(
        None,
        "Stop after this many seconds; exit code 75 means run again to continue.",
        bounds=Bounds(0),
    )
    take_over: bool = setting(False, "Take the lease of a run that died without releasing it.")
    restart: bool = setting(
        False, "Forget this migration's ledger record and start from the first row."
    )
    reapply: bool = setting(
        False,
        "Cut a rolled-back migration over again (after bringing it in step); without it, "
        "runs after a rollback change nothing and exit 0.",
    )
    write_path: str = setting(
        INSERT,
        "insert (upsert batches), bulk (Milvus server import jobs from files on "
        "--bulk-storage) or auto (bulk when --bulk-storage is given and the source is large).",
        WRITE_PATHS,
    )
    bulk_storage: str | None = setting(
        None,
        "Where bulk import files go, deleted after import: a directory the Milvus server "
        "reads (absolute path on its shared file system), or s3://BUCKET/PREFIX in the "
        "bucket a server on MinIO or S3 keeps its data in (AWS_* credentials).",
    )
    yes_overwrite: bool = setting(False, "Confirm --strategy in-place.")
    accept_regression: bool = setting(
        False, "Move the alias even if the adapter's validated new->evolved is below old->old."
    )
    across_metric: bool = setting(
        False, "Evolve an IP/L2 collection of non-unit vectors into unit vectors."
    )
    max_retries: int = setting(
        5,
        "Retries of a step after a passing store failure (connection lost, timeout, rate "
        "limit), with exponential backoff.",
        bounds=Bounds(0, 100),
    )
    timeout: float = setting(
        300.0,
        "Seconds to keep retrying one step before giving up (resumably).",
        bounds=Bounds(1, 86400),
    )
    skip_bad_vectors: bool = setting(
        False,
        "Leave rows with NaN, inf or all-zero vectors out (recorded in the ledger and "
        "reported) instead of stopping at the first one.",
    )
    snapshot_dir: Path = setting(
        Path("dmu-snapshots"), "Where in-place keeps its Parquet snapshot."
    )
    dry_run: bool = setting(False, "Print the plan and a timed estimate; change nothing.")
    shards: int | None = setting(
        None,
        "Split the ids into N ranges that run, fail and resume independently; the alias "
        "moves when all are done and verified.",
        bounds=Bounds(1),
    )
    workers: int = setting(
        1, "Local worker processes running --shards in parallel.", bounds=Bounds(1, 256)
    )
    shard: str | None = setting(
        None,
        "Run only shard INDEX/COUNT (from 0, e.g. $JOB_COMPLETION_INDEX/8); the last shard to "
        "finish verifies and cuts over.",
    )
    engine: str = setting(ENGINES[0], "Where --shards run: local (processes here) or ray.", ENGINES)
    ray_address: str | None = setting(
        None, "Ray cluster to run on (ray://host:10001, auto); default: a local Ray."
    )


DEFAULTS = EvolveSettings()
_FIELDS = {f.name: f for f in fields(EvolveSettings)}


@dataclass(frozen=True)
class RetryPolicy:
    """How a step that failed for a passing reason is retried (evolve/retry.py)."""

    max_retries: int = DEFAULTS.max_retries
    timeout: float = DEFAULTS.timeout  # give up on one step after this many seconds of retrying
    base_delay: float = 0.5
    max_delay: float = 30.0


@dataclass(frozen=True)
class EvolveOptions:
    """What the pipeline reads of the settings for one run; the defaults are the settings'."""

    batch_size: int = DEFAULTS.batch_size
    max_seconds: float | None = DEFAULTS.max_seconds  # stop (resumably) after this much work
    take_over: bool = DEFAULTS.take_over  # take the lease of a run that died
    restart: bool = DEFAULTS.restart  # forget the ledger record and start from the beginning
    snapshot_root: Path = DEFAULTS.snapshot_dir
    skip_bad_vectors: bool = DEFAULTS.skip_bad_vectors  # leave NaN/inf/zero rows out, recorded
    retry: RetryPolicy = RetryPolicy()
    read_ahead: int = DEFAULTS.read_ahead  # batches each stage may run ahead of the writer
    full_verify: bool = DEFAULTS.full_verify  # diff every id even after one whole pass
    reapply: bool = DEFAULTS.reapply  # bring a rolled-back migration in step, cut over again
    write_path: str = DEFAULTS.write_path  # insert, bulk or auto (evolve/bulk_pass.py)
    bulk_storage: str | None = DEFAULTS.bulk_storage  # a directory or bucket the server reads

    def __post_init__(self) -> None:
        # Library callers build options directly: the same one-line errors as the flags.
        for name in ("batch_size", "max_seconds", "read_ahead", "write_path"):
            check_value(_FIELDS[name], getattr(self, name))
        if self.bulk_storage is not None and not self.bulk_storage.strip():
            # An empty path resolves to the working directory, which no server shares.
            raise InputError(
                "--bulk-storage is empty, so import files would go into the working "
                "directory; give a directory the Milvus server shares or s3://BUCKET/PREFIX, "
                "or leave --bulk-storage out to insert"
            )

    @classmethod
    def of(cls, s: EvolveSettings) -> EvolveOptions:
        return cls(
            batch_size=s.batch_size,
            max_seconds=s.max_seconds,
            take_over=s.take_over,
            restart=s.restart,
            snapshot_root=s.snapshot_dir,
            skip_bad_vectors=s.skip_bad_vectors,
            retry=RetryPolicy(s.max_retries, s.timeout),
            read_ahead=s.read_ahead,
            full_verify=s.full_verify,
            reapply=s.reapply,
            write_path=s.write_path,
            bulk_storage=s.bulk_storage,
        )


def evolve_settings(config_file: str | Path | None = None, **settings: Any) -> EvolveSettings:
    """The settings ``evolve`` runs with: the defaults, then the file, then ``settings``."""
    unknown_names(EvolveSettings, "evolve", settings)
    given = dict(settings)
    # The verb takes either kind of path for both.
    if isinstance(given.get("snapshot_dir"), str):
        given["snapshot_dir"] = Path(given["snapshot_dir"])
    if isinstance(given.get("bulk_storage"), Path):
        given["bulk_storage"] = str(given["bulk_storage"])
    file_values = {}
    if config_file is not None:
        file_values = load_toml(config_file, EvolveSettings, "evolve")
    return build(EvolveSettings, file_values, given, config_file)

"""How ``evolve`` fans out: --shards/--workers, --shard i/N, --engine ray, checked up front."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmu_migrate.errors import InputError
from dmu_migrate.evolve import fanout as engines
from dmu_migrate.evolve.fanout import ShardJob, default_threads, new_owner
from dmu_migrate.evolve.shards import evolve_one_shard, evolve_split, parse_shard
from dmu_migrate.stores.pair import StorePair

if TYPE_CHECKING:
    from dmu_migrate.evolve.plan import Plan
    from dmu_migrate.evolve.progress import Report
    from dmu_migrate.evolve.run import EvolveResult
    from dmu_migrate.evolve.settings import EvolveOptions
    from dmu_migrate.stores.base import VectorStore


@dataclass(frozen=True)
class Fanout:
    shards: int | None  # --shards N
    workers: int
    one: tuple[int, int] | None  # --shard i/N
    engine: str
    ray_address: str | None

    @classmethod
    def from_flags(
        cls,
        shards: int | None,
        workers: int,
        shard: str | None,
        engine: str,
        ray_address: str | None,
    ) -> Fanout:
        # Their choices and ranges are checked with the settings (evolve/settings.py).
        one = parse_shard(shard) if shard is not None else None
        if one is not None and shards is not None:
            raise InputError(
                "--shard i/N runs one shard and --shards N runs them all; give one of the two"
            )
        if one is not None and (engine != "local" or workers != 1):
            raise InputError(
                "--shard i/N runs one shard in this process; drop --workers/--engine, or use "
                "--shards N to run them all"
            )
        if shards is None and one is None and (workers != 1 or engine != "local"):
            raise InputError("--workers and --engine run shards; add --shards N")
        if engine == "ray" and workers != 1:
            raise InputError(
                "--workers sets local processes; with --engine ray the cluster's CPUs set how "
                "many shards run at once (each asks for --threads CPUs)"
            )
        if ray_address is not None and engine != "ray":
            raise InputError("--ray-address applies to --engine ray; add --engine ray")
        return cls(shards, workers, one, engine, ray_address)

    @property
    def sharded(self) -> bool:
        return self.shards is not None or self.one is not None

    @property
    def parallel(self) -> bool:
        """Whether shards run in other processes than this one."""
        return self.engine == "ray" or (self.shards is not None and self.workers > 1)

    def threads(self, threads: int) -> int:
        """onnxruntime threads per worker: a local machine's cores are shared out."""
        if self.engine == "ray":
            return threads if threads > 0 else 1  # Ray places tasks by the CPUs they ask for
        return default_threads(threads, self.workers if self.parallel else 1)

    def job(
        self,
        uri: str,
        token: str | None,
        collection: str,
        adapters: list[Path],
        threads: int,
        plan_args: dict[str, Any],
        options: EvolveOptions,
        target: tuple[str, str | None] | None = None,
    ) -> ShardJob:
        """``target``: the uri and token of the store evolve --target-uri writes into."""
        count = self.shards or (self.one[1] if self.one else 1)
        return ShardJob(
            uri,
            token,
            collection,
            tuple(str(a.resolve()) for a in adapters),
            threads,
            tuple(plan_args.items()),
            options,
            count,
            new_owner(),
            *(target or (None, None)),
        )


def run_fanout(
    store: VectorStore,
    plan: Plan,
    fanout: Fanout,
    job: ShardJob,
    on_progress: Report | None,
) -> EvolveResult:
    if fanout.one is not None:
        index, count = fanout.one
        return evolve_one_shard(store, plan, index, count, job.options, on_progress)
    # With --target-uri, workers open both stores: each must admit several processes.
    opened = [store.source, store.target] if isinstance(store, StorePair) else [store]
    embedded = [s.uri for s in opened if not s.shared]
    if fanout.parallel and embedded:
        raise InputError(
            f"'{embedded[0]}' is an embedded store that one process at a time can open, so "
            f"shards cannot run in parallel; use --workers 1 and no --engine, or a server"
        )
    if fanout.engine == "ray":
        runner = engines.on_ray(job, fanout.ray_address)
    elif fanout.workers > 1:
        runner = engines.local_processes(job, fanout.workers)
    else:
        runner = engines.in_process(store, plan, job)
    return evolve_split(store, plan, job.count, job.options, runner, job.owner, on_progress)

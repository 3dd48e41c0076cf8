"""Where shards run: in this process, in local worker processes, or as Ray tasks.

Each runner takes the indexes of the shards to run and a ``tick`` to call
about once a second (it keeps the coordinator's lease alive and its progress
bar moving), and returns one ShardOutcome per shard. A worker opens its own
store client and onnxruntime session from a ShardJob, which is plain data, so
it pickles to a spawned process or a Ray node. A failed shard comes back as
an outcome with its error: the others go on, and it resumes from its cursor.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmu_migrate.errors import DmuError, InputError, LeaseHeld, StoreError
from dmu_migrate.evolve.ledger import this_process
from dmu_migrate.evolve.plan import Plan, plan_for
from dmu_migrate.evolve.progress import EVOLVE
from dmu_migrate.evolve.settings import EvolveOptions
from dmu_migrate.evolve.shards import ShardOutcome, run_shard
from dmu_migrate.stores.base import VectorStore, redact
from dmu_migrate.stores.opener import open_run

log = logging.getLogger(__name__)

Tick = Callable[[int | None], None]  # rows done by the runner's shards, None: unknown
RunShards = Callable[[list[int], Tick], list[ShardOutcome]]
POLL = 1.0
RAY_RETRIES = 2  # Ray re-runs a shard whose worker died or whose store kept failing


@dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to run a shard of this migration on its own."""

    uri: str
    token: str | None
    collection: str
    adapters: tuple[str, ...]  # artifact directories, readable at these paths by every worker
    threads: int  # onnxruntime threads per worker
    plan_args: tuple[tuple[str, Any], ...]  # make_plan's keyword arguments
    options: EvolveOptions
    count: int
    # One lease owner for every shard of this run: a shard that Ray retries in another
    # process takes its own lease back instead of waiting for it to expire.
    owner: str
    # evolve --target-uri: the store the evolved collection, ledger and alias go to.
    target_uri: str | None = None
    target_token: str | None = None

    def plan(self, store: VectorStore) -> Plan:
        return plan_for(
            store,
            self.collection,
            [Path(a) for a in self.adapters],
            self.threads,
            **dict(self.plan_args),
        )


def new_owner() -> str:
    return f"{this_process()}/{uuid.uuid4().hex[:8]}"


def run_job(job: ShardJob, index: int) -> ShardOutcome:
    """One shard with a store client and adapter session of its own: every worker's body."""
    try:
        with _opened(job) as store:
            return run_shard(store, job.plan(store), index, job.count, job.options, job.owner)
    except DmuError as exc:
        return failed(index, job.count, exc)


def _opened(job: ShardJob) -> AbstractContextManager[VectorStore]:
    """The job's store, or the pair of its source and target stores, as the run opened them."""
    filter = dict(job.plan_args).get("filter")
    return open_run(job.uri, job.token, job.collection, job.target_uri, job.target_token, filter)


def failed(index: int, count: int, exc: DmuError) -> ShardOutcome:
    """A shard's error as data, of its kind, so one failed shard does not stop the others."""
    return ShardOutcome(index, count, error=str(exc), error_kind=type(exc))


def in_process(store: VectorStore, plan: Plan, job: ShardJob) -> RunShards:
    """One shard after another on the open store: embedded stores admit one process only."""

    def run(indexes: list[int], tick: Tick) -> list[ShardOutcome]:
        outcomes: list[ShardOutcome] = []
        for index in indexes:
            finished = sum(o.rows_done for o in outcomes)

            def moved(phase: str, done: int, total: int | None, before: int = finished) -> None:
                if phase == EVOLVE:  # this process knows the progress: no ledger reads
                    tick(before + done)

            try:
                outcome = run_shard(
                    store,
                    plan,
                    index,
                    job.count,
                    job.options,
                    job.owner,
                    on_progress=moved,
                )
            except DmuError as exc:
                outcome = failed(index, job.count, exc)
            outcomes.append(outcome)
            if not outcome.finished and outcome.error is None:
                break  # stopped by --max-seconds: the rest wait for the next run
        return outcomes

    return run


def _worker(job: ShardJob, index: int, results: Any) -> None:
    results.put(run_job(job, index))


def local_processes(job: ShardJob, workers: int) -> RunShards:
    """Up to ``workers`` spawned processes, one per shard, started as others finish.

    One process per shard (not a pool) so that a worker killed by the OS costs
    only its own shard: a process pool breaks as a whole when one worker dies.
    Spawned, not forked: the parent's gRPC channels and threads do not survive a fork.
    """

    def run(indexes: list[int], tick: Tick) -> list[ShardOutcome]:
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        todo = list(indexes)
        running: dict[int, Any] = {}
        outcomes: dict[int, ShardOutcome] = {}
        while todo or running:
            while todo and len(running) < workers:
                index = todo.pop(0)
                process = context.Process(
                    target=_worker, args=(job, index, results), name=f"dmu-shard-{index}"
                )
                process.start()
                running[index] = process
            try:
                outcome = results.get(timeout=POLL)
                outcomes[outcome.index] = outcome
            except queue.Empty:
                pass
            tick(None)
            for index, process in list(running.items()):
                if index in outcomes:
                    process.join()
                    del running[index]
                elif process.exitcode is not None:
                    _drain(results, outcomes)
                    if index not in outcomes:
                        outcomes[index] = ShardOutcome(
                            index,
                            job.count,
                            error=f"its worker process exited with code {process.exitcode}",
                            error_kind=StoreError,
                        )
                    del running[index]
        return [outcomes[i] for i in indexes if i in outcomes]

    return run


def _drain(results: Any, outcomes: dict[int, ShardOutcome]) -> None:
    """Outcomes a worker sent just before it exited."""
    while True:
        try:
            outcome = results.get(timeout=0.2)
        except queue.Empty:
            return
        outcomes[outcome.index] = outcome


class RetryableShard(Exception):
    """A shard that failed for a reason worth another try (its store kept failing)."""


def _ray_shard(job: ShardJob, index: int) -> ShardOutcome:
    outcome = run_job(job, index)
    # A store that kept failing, or a lease held elsewhere (that run may end meanwhile);
    # never AccessDenied, which waiting does not fix.
    kind = outcome.error_kind
    if kind in (StoreError, LeaseHeld):
        raise RetryableShard(outcome.error)
    return outcome


def on_ray(job: ShardJob, address: str | None, retries: int = RAY_RETRIES) -> RunShards:
    """Shards as Ray tasks on the cluster at ``address`` (a local Ray when None).

    Ray re-runs a task whose worker died (``max_retries``) or that raised
    RetryableShard; a shard that fails every try is reported and stays
    resumable. Each task asks for ``job.threads`` CPUs, so Ray packs as many
    shards onto a node as its CPUs allow.
    """

    def run(indexes: list[int], tick: Tick) -> list[ShardOutcome]:
        ray = _import_ray()
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
                raise InputError(
                    f"cannot reach Ray at '{address or 'a new local cluster'}' "
                    f"({redact(' '.join(str(exc).split())[:200])}); check --ray-address"
                ) from exc
        try:
            task = ray.remote(_ray_shard).options(
                num_cpus=max(1, job.threads),
                max_retries=retries,
                retry_exceptions=[RetryableShard],
            )
            refs = {task.remote(job, index): index for index in indexes}
            pending, outcomes = list(refs), {}
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL)
                tick(None)
                for ref in ready:
                    index = refs[ref]
                    try:
                        outcomes[index] = ray.get(ref)
                    except Exception as exc:  # the last try failed, or its node was lost
                        cause = getattr(exc, "cause", None) or exc
                        outcomes[index] = ShardOutcome(
                            index,
                            job.count,
                            error=" ".join(str(cause).split())[:300],
                            error_kind=StoreError,
                        )
            return [outcomes[i] for i in indexes]
        finally:
            if started:
                ray.shutdown()

    return run


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise InputError(
            "--engine ray needs Ray, which is not installed; install dmu-migrate[ray] "
            "(pip install 'dmu-migrate[ray]') on this machine and every Ray node"
        ) from exc
    return ray


def default_threads(threads: int, workers: int) -> int:
    """onnxruntime threads per worker: --threads, or the machine's cores shared out."""
    return threads if threads > 0 else max(1, (os.cpu_count() or 1) // workers)

"""Verification's self-search holds on real data: exact duplicates, cron re-runs, broken targets.

The HNSW case on the Milvus server is in test_evolve_self_search_hnsw.py (integration).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from backends import Backend
from galleries import Digits
from migrations import run
from typer.testing import CliRunner

from dmu_migrate.artifact import Artifact
from dmu_migrate.cli import app
from dmu_migrate.errors import VerificationError
from dmu_migrate.evolve import self_search as search_check
from dmu_migrate.evolve.ledger import DONE, FAILED, Ledger
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.self_search import judge, self_search
from dmu_migrate.stores.base import WIDER, Batch, Hits
from dmu_migrate.stores.milvus_schema import IndexSpec
from dmu_migrate.stores.milvus_search import fitted

pytestmark = pytest.mark.timeout(300)
EMBEDDED = pytest.mark.parametrize(
    "backend", ["milvus-lite", "qdrant-local", "parquet"], indirect=True
)
LITE = pytest.mark.parametrize("backend", ["milvus-lite"], indirect=True)
ROWS, DISTINCT, INSERTS = 300, 40, 20  # mostly copies of one vector, like boilerplate text


def mostly_duplicates(digits: Digits, rows: int, distinct: int, offset: int = 0) -> np.ndarray:
    """``rows`` copies of one digit's vector, of which the first ``distinct`` are other digits."""
    vectors = np.repeat(digits.old_te[:1], rows, axis=0)
    vectors[:distinct] = digits.old_te[1 + offset : 1 + offset + distinct]
    return vectors


def insert(backend: Backend, store, source: str, ids: np.ndarray, vectors: np.ndarray) -> None:
    info = store.describe(source)
    store.write_rows(info, source, Batch(ids, vectors, {"label": [1] * len(ids)}), {})
    store.flush(source)


@EMBEDDED
def test_duplicates_verify_through_cron_reruns_with_inserts(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias = backend.unique("dup"), backend.unique("live")
    ids = np.arange(ROWS) * 2 + 1
    backend.seed(
        source, ids, mostly_duplicates(digits, ROWS, DISTINCT), {"label": [1] * ROWS}, alias=alias
    )
    store = backend.open_store()
    first = run(store, alias, [artifact])
    assert first.outcome == Outcome.DONE and first.verify is not None
    # The scenario bites: the top 10 of a duplicate's own vector leave out most own ids.
    target, field = first.target, first.target_field
    stored = store.fetch(store.describe(target), ids, field).vectors
    hits = store.search(target, field, stored, 10)
    assert sum(i not in got for i, got in zip(ids.tolist(), hits.ids, strict=True)) > 200
    v = first.verify
    assert v.sampled == 256 and "tie with equal vectors" in v.search, v.search
    # Milvus Lite's graph index cannot reach a few of the distinct rows among so many copies,
    # even at ef 256; the sample passes on its recall.
    assert v.searched >= 0.95 * v.sampled, v.search

    for round in range(2):  # cron: the application inserts more of the same, evolve runs again
        new = 10_000 + 100 * round + np.arange(INSERTS)
        insert(backend, store, source, new, mostly_duplicates(digits, INSERTS, 4, 50 + 4 * round))
        again = run(store, alias, [artifact])
        assert again.outcome == Outcome.DONE and again.caught_up == INSERTS
        assert again.verify is not None and again.verify.searched >= 0.95 * again.verify.sampled
    assert store.count(target) == ROWS + 2 * INSERTS
    record = Ledger(store).load(again.migration)
    assert record is not None and record.status == DONE


@LITE
def test_failed_check_after_synced_inserts_is_finished_by_the_next_run(
    backend: Backend, digits: Digits, artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inserts are synced into the served collection before verification: a failure there
    leaves them served and on record, and the next run verifies and finishes."""
    source, alias = backend.unique("dup"), backend.unique("live")
    ids = np.arange(ROWS) * 2 + 1
    backend.seed(
        source, ids, mostly_duplicates(digits, ROWS, DISTINCT), {"label": [1] * ROWS}, alias=alias
    )
    store = backend.open_store()
    first = run(store, alias, [artifact])
    new = 10_000 + np.arange(INSERTS)
    insert(backend, store, source, new, mostly_duplicates(digits, INSERTS, 4, 60))

    monkeypatch.setattr(search_check, "MIN_RECALL", 2.0)  # no sample can pass, nor its source
    with pytest.raises(VerificationError, match="needs 200%"):
        run(store, alias, [artifact])
    record = Ledger(store).load(first.migration)
    assert record is not None and record.status == FAILED
    assert store.count(first.target) == ROWS + INSERTS  # synced, and served through the alias
    assert store.alias_target(alias) == first.target

    monkeypatch.undo()
    again = run(store, alias, [artifact])
    assert again.outcome == Outcome.DONE and again.caught_up == 0
    assert again.verify is not None and again.verify.searched >= 0.95 * again.verify.sampled
    record = Ledger(store).load(first.migration)
    assert record is not None and record.status == DONE and record.error is None
    assert record.rows_done == ROWS + INSERTS
    idle = run(store, alias, [artifact])
    assert (idle.caught_up, idle.updated, idle.deleted) == (0, 0, 0)


@LITE
def test_cli_evolve_and_verify_exit_0_on_duplicates_after_inserts(
    backend: Backend, digits: Digits, artifact: Artifact
) -> None:
    source, alias = backend.unique("dup"), backend.unique("live")
    ids = np.arange(ROWS) * 2 + 1
    backend.seed(
        source, ids, mostly_duplicates(digits, ROWS, DISTINCT), {"label": [1] * ROWS}, alias=alias
    )
    store = backend.open_store()
    new = 10_000 + np.arange(INSERTS)
    insert(backend, store, source, new, mostly_duplicates(digits, INSERTS, 4, 60))
    backend.close_stores()  # the commands open the Milvus Lite file themselves
    common = ["--uri", backend.uri, "--adapter", str(artifact.path)]
    runner = CliRunner()
    for args in (
        ["evolve", "--collection", alias, *common],
        ["evolve", "--collection", alias, *common],
        ["verify", "--collection", source, "--alias", alias, *common],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "by a tie with equal vectors" in said and "(AUTOINDEX ef=256, COSINE" in said, said


@pytest.mark.parametrize("backend", ["milvus-lite", "parquet"], indirect=True)
def test_target_that_does_not_hold_the_searched_vectors_fails_naming_the_cause(
    backend: Backend, digits: Digits
) -> None:
    """Searching with vectors the collection does not hold: every row is missed, and the
    message says so with ids and scores (the check still fails a broken target)."""
    name = backend.unique("held")
    ids = np.arange(200) + 1
    backend.seed(name, ids, digits.old_te[:200], {"label": [1] * 200})
    store = backend.open_store()
    wrong = np.random.default_rng(3).normal(size=(50, digits.old_te.shape[1])).astype(np.float32)
    field = backend.vector_name
    with pytest.raises(VerificationError) as failed:
        self_search(store, name, field, ids[:50], wrong)
    message = str(failed.value)
    assert "\n" not in message
    assert re.search(r"found \d \([\d.]+%, needs 95%\)", message), message  # a random hit or so
    assert f"ids {ids[0]} (own 1.0000, 10th hit 0." in message, message
    if backend.kind == "parquet":  # an exact search cannot miss a row it holds
        assert "search scored every row" in message, message
    else:
        assert "missed by the index" in message, message
    # The same collection searched with its own stored vectors passes.
    held = store.fetch(store.describe(name), ids[:50], field).vectors
    assert self_search(store, name, field, ids[:50], held).found == 50


def test_judge_tells_ties_inner_product_and_broken_scores_apart() -> None:
    """Per row: own id returned; tied with equal vectors; outscored by inner product (a
    correct ranking); missed by the index; or behind scores the metric cannot give."""
    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids = [1, 2, 3, 4]
    ten = lambda s: [s] * 10  # noqa: E731
    hits = Hits(
        [
            [1, *range(100, 109)],
            list(range(110, 120)),
            list(range(120, 130)),
            list(range(130, 140)),
        ],
        [ten(1.0), ten(0.99999994), ten(0.7), ten(1.4)],
        "COSINE",
        "HNSW ef=256",
    )
    got = judge(ids, q, hits)
    assert (got.found, got.tied, got.outranked) == (1, 1, 0)
    assert [m.id for m in got.missed] == [3] and [m.id for m in got.impossible] == [4]
    message = got.failure("docs__v2")
    assert "found 2 (50.0%, needs 95%)" in message
    assert "1 missed by the index" in message and "ids 3 (own 1.0000, 10th hit 0.7000)" in message
    assert "under COSINE (ids 4 (own 1.0000, 10th hit 1.4000))" in message
    assert "1 counted found by a tie with equal vectors" in message and "\n" not in message
    # By inner product a longer vector outscores a row's own: a correct ranking, not a miss.
    ip = Hits([list(range(200, 210))], [ten(3.0)], "IP", "exact", True)
    assert judge([5], q[:1], ip).outranked == 1
    # Distances: equal vectors tie at 0, a farther 10th hit is a miss.
    l2 = Hits([list(range(300, 310)), list(range(310, 320))], [ten(0.0), ten(0.5)], "L2", "x")
    assert judge([6, 7], q[:2], l2).tied == 1 and len(judge([6, 7], q[:2], l2).missed) == 1


def test_a_second_look_widens_each_index_budget_up_to_what_milvus_takes() -> None:
    """The rows a first search missed are searched again with WIDER times the budget,
    capped where Milvus refuses larger values; exact indexes have nothing to widen."""

    def spec(kind: str, **params: object) -> IndexSpec:
        return IndexSpec("vector", "vector", kind, "COSINE", dict(params))

    assert fitted(spec("HNSW"), 10, lite=False) == ({"ef": 256}, "HNSW ef=256")
    assert fitted(spec("HNSW"), 10, lite=False, widen=WIDER)[0] == {"ef": 256 * WIDER}
    assert fitted(spec("HNSW"), 4000, lite=False, widen=WIDER)[0] == {"ef": 32768}
    assert fitted(spec("IVF_FLAT", nlist=1024), 10, lite=False)[0] == {"nprobe": 256}
    assert fitted(spec("IVF_FLAT", nlist=1024), 10, lite=False, widen=2)[0] == {"nprobe": 512}
    assert fitted(spec("IVF_FLAT", nlist=1024), 10, lite=False, widen=WIDER)[0] == {
        "nprobe": 1024  # every list: an exact search
    }
    assert fitted(spec("AUTOINDEX"), 10, lite=True, widen=WIDER)[0] == {"ef": 256 * WIDER}
    assert fitted(spec("FLAT"), 10, lite=False, widen=WIDER)[0] == {}


@LITE
def test_rows_missed_by_both_looks_fail_and_the_report_counts_a_second_looks_finds(
    backend: Backend, digits: Digits
) -> None:
    """A sample of rows the collection holds and of vectors it does not: the held ones
    are found, the others missed by both looks, and the failure says the wider search
    missed them too."""
    name = backend.unique("looks")
    ids = np.arange(100) + 1
    backend.seed(name, ids, digits.old_te[:100], {"label": [1] * 100})
    store = backend.open_store()
    field = backend.vector_name
    held = store.fetch(store.describe(name), ids[:40], field).vectors
    wrong = np.random.default_rng(4).normal(size=(10, held.shape[1])).astype(np.float32)
    with pytest.raises(VerificationError) as failed:
        self_search(store, name, field, ids[:50], np.vstack([held, wrong]))
    message = str(failed.value)
    assert f"also when searched with a {WIDER}x wider budget" in message, message
    assert re.search(r"found 4\d \(", message), message
    got = search_check.SelfSearch("HNSW ef=256", "COSINE", 50, found=50, widened=3)
    assert f"3 of them only by a {WIDER}x wider search" in got.describe()

"""Real network outages between evolve and a real Milvus server, through a loopback proxy.

The proxy (tests/faults.py) drops every connection and refuses new ones, as a
restarting server or a broken network does. evolve must either wait and
continue (retries with backoff) or stop with a clear message and a ledger it
resumes from; the final collection is the same as an uninterrupted run's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from backends import Backend
from faults import Proxy
from galleries import Digits

from dmu_migrate.artifact import Artifact
from dmu_migrate.errors import StoreError
from dmu_migrate.evolve.ledger import Ledger
from dmu_migrate.evolve.pipeline import EvolveOptions, EvolveResult, evolve
from dmu_migrate.evolve.plan import make_plan
from dmu_migrate.evolve.retry import RetryPolicy, is_transient
from dmu_migrate.evolve.run import Outcome
from dmu_migrate.evolve.transform import AdapterChain
from dmu_migrate.stores.opener import open_store

ROWS = 160


@pytest.fixture
def server(milvus_server: str, tmp_path: Any) -> Iterator[Backend]:
    """The shared server, left as found: every collection a test made (ledger too) is dropped."""
    backend = Backend("milvus-server", milvus_server, tmp_path)
    before = backend.list_collections()
    yield backend
    backend.close_stores()
    backend.drop_created(sorted(backend.list_collections() - before))


def seeded(backend: Backend, digits: Digits) -> tuple[Backend, str, np.ndarray]:
    source, alias = backend.unique("flaky"), backend.unique("live")
    ids = np.arange(1, ROWS + 1)
    backend.seed(source, ids, digits.old_te[:ROWS], {"name": [f"n{i}" for i in ids]}, alias=alias)
    return backend, alias, ids


def wait_for_progress(uri: str, key_part: str, rows: int) -> None:
    """Block until the ledger (read over a direct connection) shows some acknowledged rows."""
    store = open_store(uri)
    try:
        for _ in range(600):
            done = [r.rows_done for r in Ledger(store).history() if key_part in r.key]
            if done and done[0] >= rows:
                return
            time.sleep(0.02)
    finally:
        store.close()
    pytest.fail("evolve made no progress before the outage")


def check_final(
    backend: Backend, result: EvolveResult, ids: np.ndarray, digits: Digits, artifact: Artifact
) -> None:
    rows = backend.read_all(result.target)
    assert sorted(rows) == ids.tolist()
    expected = AdapterChain([artifact])(digits.old_te[:ROWS])
    for i, row_id in enumerate(ids.tolist()):
        np.testing.assert_allclose(rows[row_id]["vector"], expected[i], atol=1e-5)
        assert rows[row_id]["dmu_version"] == "v2"


@pytest.mark.integration
def test_outage_mid_run_is_waited_out(
    milvus_server: str, server: Backend, digits: Digits, artifact: Artifact
) -> None:
    backend, alias, ids = seeded(server, digits)
    proxy = Proxy(int(urlsplit(milvus_server).port or 19530))
    outcome: dict[str, Any] = {}
    try:
        store = open_store(f"http://127.0.0.1:{proxy.port}")
        plan = make_plan(store, alias, AdapterChain([artifact]))
        options = EvolveOptions(batch_size=4, retry=RetryPolicy(max_retries=8, base_delay=0.2))

        def run() -> None:
            try:
                outcome["result"] = evolve(store, plan, options)
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        wait_for_progress(milvus_server, plan.source.name, 8)
        proxy.cut()
        time.sleep(3.0)  # several failed attempts land inside the outage
        proxy.restore()
        worker.join(timeout=300)
        store.close()
    finally:
        proxy.close()
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.outcome == Outcome.DONE and result.retries >= 1
    check_final(backend, result, ids, digits, artifact)


@pytest.mark.integration
def test_outage_past_the_retry_budget_stops_resumably(
    milvus_server: str, server: Backend, digits: Digits, artifact: Artifact
) -> None:
    backend, alias, ids = seeded(server, digits)
    proxy = Proxy(int(urlsplit(milvus_server).port or 19530))
    try:
        store = open_store(f"http://127.0.0.1:{proxy.port}")
        plan = make_plan(store, alias, AdapterChain([artifact]))
        proxy.cut()  # down before the first batch, and for good
        quick = RetryPolicy(max_retries=2, base_delay=0.1, max_delay=0.2)
        with pytest.raises(StoreError, match=r"kept failing after 2 retries.*run evolve again"):
            evolve(store, plan, EvolveOptions(batch_size=8, retry=quick))
        proxy.restore()
        result = evolve(store, plan, EvolveOptions(batch_size=8))
        store.close()
    finally:
        proxy.close()
    assert result.outcome == Outcome.DONE
    check_final(backend, result, ids, digits, artifact)


def test_only_passing_failures_are_retried() -> None:
    """A store maps its client's errors (stores/client_errors.py); retry reads the class."""
    from pymilvus import MilvusException

    from dmu_migrate.stores.client_errors import store_error
    from dmu_migrate.stores.milvus_errors import MILVUS

    def mapped(exc: BaseException) -> StoreError | None:
        return store_error(exc, MILVUS, "http://x:19530", "count")

    assert is_transient(mapped(ConnectionRefusedError()))
    assert is_transient(mapped(MilvusException(code=2, message="Fail connecting to server")))
    try:
        try:
            raise TimeoutError("read timed out")
        except TimeoutError as inner:
            raise MilvusException(code=1, message="query failed") from inner
    except MilvusException as wrapped:
        assert is_transient(mapped(wrapped))
    invalid = mapped(MilvusException(code=1100, message="invalid parameter"))
    assert isinstance(invalid, StoreError) and not is_transient(invalid)
    assert str(invalid).startswith("Milvus at 'http://x:19530': count failed: ")
    assert "invalid parameter" in str(invalid) and "\n" not in str(invalid)
    assert not is_transient(StoreError("collection 'x' does not exist"))
    assert mapped(ValueError("bad")) is None  # not the client's: a bug, kept as it is


def test_a_store_line_raised_from_a_passing_failure_is_retried() -> None:
    """A store may word a client failure as its own line (count's refused filter); what lies
    under it still decides, at the store's boundary, whether it is retried."""
    from pymilvus import MilvusException

    from dmu_migrate.errors import InputError
    from dmu_migrate.stores.client_errors import Client, mapped
    from dmu_migrate.stores.milvus_errors import MILVUS

    def raised(code: int) -> BaseException:
        try:
            with mapped(MILVUS, "http://x:19530", "count"):
                try:
                    raise MilvusException(code=code, message="no answer")
                except MilvusException as exc:
                    raise InputError("filter 'x' is not valid for 'c'; fix --filter") from exc
        except Exception as exc:
            return exc
        raise AssertionError("nothing raised")

    down = raised(2)
    assert is_transient(down) and str(down).startswith("filter 'x' is not valid")
    refused = raised(1100)
    assert type(refused) is InputError and not is_transient(refused)
    plain = Client("Parquet", (OSError,))
    try:
        with mapped(plain, "parquet:x", "read"):
            raise KeyError("a bug")
    except KeyError:
        pass  # not the client's: kept as it is, with its traceback


def test_qdrant_client_errors_are_judged_by_the_qdrant_store() -> None:
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    from dmu_migrate.stores.client_errors import store_error
    from dmu_migrate.stores.qdrant import QDRANT

    def passing(exc: BaseException) -> bool:
        return is_transient(store_error(exc, QDRANT, "qdrant://x:6333", "scroll"))

    def response(status: int) -> UnexpectedResponse:
        return UnexpectedResponse(status, "x", b"{}", httpx.Headers())

    assert passing(response(503)) and passing(response(429))
    assert not passing(response(400)) and not passing(response(404))
    assert passing(ResponseHandlingException(OSError("no answer")))

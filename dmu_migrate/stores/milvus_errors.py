"""Which of pymilvus's exceptions are Milvus's, and which of them pass: what every module
that calls a MilvusClient maps its failures with (stores/client_errors.py)."""

from __future__ import annotations

import grpc
from pymilvus import MilvusException
from pymilvus.exceptions import MilvusUnavailableException

from dmu_migrate.stores.client_errors import Client

# pymilvus codes: 2 = cannot connect, 8 = rate limited, 9 = denied while the server is busy.
_TRANSIENT_CODES = {2, 8, 9}


def transient(exc: BaseException) -> bool:
    """Whether a pymilvus error is a passing failure: the server unreachable, or busy."""
    if isinstance(exc, MilvusUnavailableException):
        return True
    return isinstance(exc, MilvusException) and exc.code in _TRANSIENT_CODES


# The client's errors, grpc's (a call after connecting), and the disk's under Milvus Lite.
MILVUS = Client("Milvus", (MilvusException, grpc.RpcError, OSError), transient)

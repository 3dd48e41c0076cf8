"""Rejected credentials and missing privileges, told apart from a store that is down.

pymilvus reports a wrong password at connect time as "Fail connecting ...,
illegal connection params or server unavailable", the words it uses for a
server that is down; only the gRPC status chained under it (UNAUTHENTICATED)
says which. Calls after connecting fail with the bare gRPC error:
UNAUTHENTICATED when the user was removed or its password changed,
PERMISSION_DENIED when the user lacks a privilege (Milvus RBAC). Qdrant
servers answer the same gRPC statuses (or HTTP 401/403) for a wrong or
read-only API key. Such a failure never passes, so it is not retried.
"""

from __future__ import annotations

from typing import Literal

from dmu_migrate.errors import AccessDenied
from dmu_migrate.stores.base import redact

Kind = Literal["credentials", "privilege"]

# Where the command line takes credentials from (cli/migration.py's Token option).
CREDENTIALS_FROM = "DMU_TOKEN or --token (Milvus user:password or token, Qdrant API key)"

_GRPC = {"UNAUTHENTICATED": "credentials", "PERMISSION_DENIED": "privilege"}
_HTTP = {401: "credentials", 403: "privilege"}
# Words servers use when a denial arrives inside an ordinary error status; looked for in
# the store clients' errors only, so that a bug's message never reads as a denial.
_CLIENTS = ("pymilvus", "qdrant_client", "grpc")
_WORDS = {"auth check failure": "credentials", "permission deny": "privilege"}


def denial(exc: BaseException | None) -> tuple[Kind, str] | None:
    """The kind of denial in ``exc`` or the errors it was raised from, with the server's words."""
    seen = 0
    while exc is not None and seen < 10:
        found = _one(exc)
        if found is not None:
            return found
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _one(exc: BaseException) -> tuple[Kind, str] | None:
    code = getattr(exc, "code", None)
    status = code() if callable(code) else code  # grpc.RpcError.code() is a method
    details = getattr(exc, "details", None)
    text = details() if callable(details) else getattr(exc, "message", None) or str(exc)
    text = redact(" ".join(str(text).split())[:200])
    kind = _GRPC.get(getattr(status, "name", ""))
    if kind is None and type(exc).__name__ == "UnexpectedResponse":  # qdrant-client's HTTP error
        kind = _HTTP.get(getattr(exc, "status_code", 0))
    if kind is None and (type(exc).__module__ or "").split(".")[0] in _CLIENTS:
        lowered = text.lower()
        kind = next((k for words, k in _WORDS.items() if words in lowered), None)
    return (kind, text) if kind is not None else None  # type: ignore[return-value]


def access_error(
    exc: BaseException, store: str, what: str = "", token_given: bool | None = None
) -> AccessDenied | None:
    """One line for a denial found in ``exc``; None when it is another failure.

    ``store`` names the store ("Milvus at 'http://...'"); ``token_given`` is
    known at connect time only (later the credentials were accepted once).
    """
    found = denial(exc)
    if found is None:
        return None
    kind, words = found
    step = f"{what}: " if what else ""
    if kind == "privilege":
        return AccessDenied(
            f"{step}{store} denied a privilege to the user of these credentials ({words}); grant "
            f"it to that user (Milvus: a role that has it, e.g. the built-in 'admin'; Qdrant: a "
            f"read-write API key), or set {CREDENTIALS_FROM} to credentials that have it"
        )
    if token_given is False:
        return AccessDenied(
            f"{step}{store} requires credentials and none were given ({words}); set {CREDENTIALS_FROM}"
        )
    return AccessDenied(
        f"{step}{store} rejected the credentials ({words}); check {CREDENTIALS_FROM}: a user "
        f"that exists with its current password, or a valid API key"
    )

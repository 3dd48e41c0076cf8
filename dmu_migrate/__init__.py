"""dmu-migrate: upgrade the embedding model behind a vector database without backfilling.

The verbs, as plain functions that return dataclasses and raise the error tree
of ``dmu_migrate.errors`` (docs/api.md)::

    import dmu_migrate
    report = dmu_migrate.train("train.parquet", name="faces-v2")
    result = dmu_migrate.evolve("faces", "adapters/faces-v2", uri="faces.db")

Names load on first use (PEP 562): ``import dmu_migrate`` imports nothing
heavy, and the evolve path never imports torch, which the evolve-only install
lacks.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from dmu_migrate.errors import (
    AccessDenied,
    ArtifactError,
    DmuError,
    InputError,
    LeaseHeld,
    LeaseLost,
    NothingToDo,
    QualityGateError,
    StoreError,
    StoreUnavailable,
    VerificationError,
)

__version__ = "0.1.0"

# Where each lazily loaded name lives.
_HOMES = {
    "train": "dmu_migrate.api.build",
    "evaluate": "dmu_migrate.api.build",
    "evolve": "dmu_migrate.api.migrate",
    "verify": "dmu_migrate.api.migrate",
    "status": "dmu_migrate.api.records",
    "history": "dmu_migrate.api.records",
    "rollback": "dmu_migrate.api.records",
    "prune": "dmu_migrate.api.records",
    "plan_backfill": "dmu_migrate.api.backfill",
    "backfill": "dmu_migrate.api.backfill",
    "TrainReport": "dmu_migrate.training.report",
    "EvalReport": "dmu_migrate.evaluation",
    "EvolveResult": "dmu_migrate.evolve.pipeline",
    "EvolvePreview": "dmu_migrate.api.migrate",
    "VerifyResult": "dmu_migrate.api.migrate",
    "Migrations": "dmu_migrate.api.records",
    "RollbackResult": "dmu_migrate.api.records",
    "PruneResult": "dmu_migrate.api.records",
    "RankedIds": "dmu_migrate.evolve.backfill_plan",
    "BackfillResult": "dmu_migrate.evolve.backfill_write",
}
__all__ = [
    "__version__",
    # the verbs
    "train",
    "evaluate",
    "evolve",
    "verify",
    "status",
    "history",
    "rollback",
    "prune",
    "plan_backfill",
    "backfill",
    # what they return
    "TrainReport",
    "EvalReport",
    "EvolveResult",
    "EvolvePreview",
    "VerifyResult",
    "Migrations",
    "RollbackResult",
    "PruneResult",
    "RankedIds",
    "BackfillResult",
    # what they raise (errors.py)
    "DmuError",
    "NothingToDo",
    "InputError",
    "ArtifactError",
    "StoreError",
    "StoreUnavailable",
    "AccessDenied",
    "LeaseHeld",
    "LeaseLost",
    "VerificationError",
    "QualityGateError",
]

if TYPE_CHECKING:
    from dmu_migrate.api.backfill import backfill, plan_backfill
    from dmu_migrate.api.build import evaluate, train
    from dmu_migrate.api.migrate import EvolvePreview, VerifyResult, evolve, verify
    from dmu_migrate.api.records import (
        Migrations,
        PruneResult,
        RollbackResult,
        history,
        prune,
        rollback,
        status,
    )
    from dmu_migrate.evaluation import EvalReport
    from dmu_migrate.evolve.backfill_plan import RankedIds
    from dmu_migrate.evolve.backfill_write import BackfillResult
    from dmu_migrate.evolve.run import EvolveResult
    from dmu_migrate.training.report import TrainReport


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'dmu_migrate' has no attribute '{name}'")
    value = getattr(importlib.import_module(home), name)
    if name != "evolve":
        globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package, where ``evolve`` is the verb even though a subpackage has its name."""

    @property
    def evolve(self) -> Any:
        return __getattr__("evolve")

    @evolve.setter
    def evolve(self, value: Any) -> None:
        # The import system binds the subpackage dmu_migrate/evolve/ here when it is
        # first imported. The verb keeps the name; the subpackage stays in sys.modules,
        # where 'from dmu_migrate.evolve import ...' and 'import dmu_migrate.evolve.x' find it.
        pass


sys.modules[__name__].__class__ = _Package

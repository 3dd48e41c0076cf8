"""Assertions and store wrappers shared by the test modules, so that none imports another."""

from __future__ import annotations

from typing import Any

from dmu_migrate.artifact import Artifact
from dmu_migrate.stores.base import Batch, VectorStore


def assert_clean_error(result: Any, code: int, *needles: str) -> None:
    """Non-zero exit, one 'error:' line naming the problem, and no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0]


def deployable(artifact: Artifact) -> Artifact:
    """The evolve tests need an artifact the quality gate lets through; say so if it does not."""
    verdict = artifact.manifest.quality["verdict"]
    assert verdict.startswith("deploy:"), (
        f"the test artifact {artifact.label} fails the gate: {verdict}"
    )
    return artifact


class InsertsBehindCursor:
    """The store, with one row inserted into the source below the cursor after the first
    batch of the main pass: the counts stop adding up, so the run diffs and catches up."""

    def __init__(self, store: VectorStore, row: Batch) -> None:
        self._store, self._row = store, row
        self._inserted = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def iter_batches(self, info: Any, *args: Any, **kwargs: Any) -> Any:
        for i, batch in enumerate(self._store.iter_batches(info, *args, **kwargs)):
            yield batch
            if i == 0 and not self._inserted:  # once, into the source, during the main pass
                self._store.write_rows(info, info.name, self._row, {})
                self._inserted = True

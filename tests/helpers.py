"""Assertions and store wrappers shared by the test modules, so that none imports another."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from dmu_migrate.artifact import Artifact
from dmu_migrate.stores.base import Batch, VectorStore

NUMPY_REPR = re.compile(r"\bnp\.[a-z_]+[0-9]*\(")  # np.int64(0), np.float32(1.5), np.str_('k')


def assert_clean_error(result: Any, code: int, *needles: str) -> None:
    """Non-zero exit, one 'error:' line naming the problem, and no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    # Ids and numbers as the user wrote them, never numpy's repr of its scalars.
    assert not NUMPY_REPR.search(lines[0]), lines[0]
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


class Phases:
    """A phase-aware callback that keeps every report, by phase, in order of arrival."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, int | None]]] = {}

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        self.calls.setdefault(phase, []).append((done, total))

    def check(self, *expected: str) -> dict[str, int]:
        """The phases came in this order, each monotone and ending at its total; their ends."""
        assert list(self.calls) == list(expected), self.calls.keys()
        ends = {}
        for phase, calls in self.calls.items():
            done = [d for d, _ in calls]
            assert done == sorted(done), (phase, calls)
            last_done, last_total = calls[-1]
            assert last_done == last_total, (phase, calls)
            ends[phase] = last_done
        return ends


def die_after_first_submit(monkeypatch: Any, run: Callable[[], Any]) -> None:
    """Call ``run`` (a bulk evolve) and end it as a killed process would, right after its
    first import job id is on record (the job itself goes on at the server)."""
    import pytest

    from dmu_migrate.evolve import bulk_pass

    submit = bulk_pass.Parts.submit

    def submit_then_die(self: bulk_pass.Parts, part: dict[str, Any]) -> None:
        submit(self, part)
        raise KeyboardInterrupt

    monkeypatch.setattr(bulk_pass.Parts, "submit", submit_then_die)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(bulk_pass.Parts, "submit", submit)


def assert_same_rows(got: dict[Any, dict[str, Any]], want: dict[Any, dict[str, Any]]) -> None:
    """The same ids, every field equal and the vectors equal to float32 rounding."""
    assert sorted(got) == sorted(want)
    for row_id, row in want.items():
        other = dict(got[row_id])
        np.testing.assert_allclose(other.pop("vector"), row["vector"], atol=1e-5)
        assert other == {k: v for k, v in row.items() if k != "vector"}, row_id

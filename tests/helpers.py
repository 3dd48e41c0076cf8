"""Assertions shared by the test modules, so that no test module imports another."""

from __future__ import annotations

from typing import Any


def assert_clean_error(result: Any, code: int, *needles: str) -> None:
    """Non-zero exit, one 'error:' line naming the problem, and no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0]

"""Each benchmark owns one marked section of docs/benchmarks.md and rewrites only that."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by the script it names, in one run, on the machine it names;\n"
    "rerun the script to refresh it. Ratios compare numbers taken side by side in that run.\n"
)


def replace_section(name: str, text: str, path: Path = DOC) -> None:
    """Put ``text`` between this section's markers, appending the section if it is new."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = path.read_text() if path.exists() else HEADER
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in doc and end in doc:
        head, rest = doc.split(start, 1)
        tail = rest.split(end, 1)[1]
        doc = head + block + tail
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)


def publish(results: Path, report: dict[str, Any], name: str, text: str) -> None:
    """Write a benchmark's raw numbers and its section of the page."""
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")
    replace_section(name, text)

"""The dmu-migrate commands the docs and examples show, as argument lists.

Read from the fenced shell blocks of the README and docs/, and from the Markdown
and shell scripts under examples/; shell arrays (``"${COMMON[@]}"``) are expanded
from their definitions. test_documented_commands.py parses each against the real
CLI and test_documented_runs.py runs those that work on a Milvus Lite file.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FENCE = re.compile(r"^```(\w*)\s*$")
ARRAY = re.compile(r"^\s*(\w+)=\((.*)\)\s*$")


def _logical_lines(lines: list[str]) -> list[str]:
    """Join backslash continuations into one line each."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            out.append(pending + line)
            pending = ""
    return out


def _code_lines(path: Path) -> list[str]:
    """Shell lines of a script, or of a Markdown page's fenced shell blocks."""
    text = path.read_text().splitlines()
    if path.suffix != ".md":
        return _logical_lines(text)
    lines: list[str] = []
    block: list[str] | None = None
    for line in text:
        fence = FENCE.match(line.strip())
        if fence and block is None:
            block = [] if fence.group(1) in ("", "bash", "sh", "shell", "console") else None
            if block is None:  # another language: skip to its closing fence
                block = ["<skip>"]
        elif fence:
            if block and block[0] != "<skip>":
                lines += _logical_lines(block)
            block = None
        elif block is not None:
            block.append(line)
    return lines


def _arguments(line: str, arrays: dict[str, list[str]]) -> list[str] | None:
    """The arguments after the dmu-migrate program in one shell line, or None."""
    line = line.strip().removeprefix("$ ")
    if "dmu-migrate" not in line and "-m dmu_migrate" not in line:
        return None
    for name, items in arrays.items():
        line = line.replace(f'"${{{name}[@]}}"', " ".join(shlex.quote(i) for i in items))
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for cut in ("|", ">>", ">", "&&", ";", "2>&1"):
        if cut in tokens:
            tokens = tokens[: tokens.index(cut)]
    if "..." in tokens:  # an abbreviation ("evolve ... --shards 64"), not a command
        return None
    # Synopsis brackets mark optional flags: check them as if typed.
    tokens = [t.removeprefix("[").removesuffix("]") for t in tokens]
    for i, token in enumerate(tokens):
        program = token.rstrip(")") in ("dmu-migrate", "$(which dmu-migrate")
        module = token == "dmu_migrate" and i and tokens[i - 1] == "-m"
        if program or module:
            rest = tokens[i + 1 :]
            # "docker build -t dmu-migrate ." names an image; the program takes a command.
            return rest if rest and not rest[0].startswith((".", "/")) else None
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where it is shown, its arguments) for each command, in file order."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "examples").rglob("*.md")) + sorted((ROOT / "examples").rglob("*.sh"))
    found = []
    for path in files:
        lines = _code_lines(path)
        arrays = {}
        for line in lines:
            if match := ARRAY.match(line):
                arrays[match.group(1)] = shlex.split(match.group(2), comments=True)
        for line in lines:
            args = _arguments(line, arrays)
            if args:
                found.append((f"{path.relative_to(ROOT)}: {' '.join(args)[:60]}", args))
    return found


COMMANDS = documented_commands()

"""docs/cli.md, the command reference, written from the commands' own ``--help``.

Run ``python -m dmu_migrate.cli.reference docs/cli.md`` after changing a command,
a flag or its help; tests/test_cli_reference.py fails while the file differs
from what this module renders, naming the first command that drifted. The help
is rendered at a fixed width, so the page does not depend on the terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dmu_migrate.cli import app

PROGRAM = "dmu-migrate"
WIDTH = 100
REGENERATE = "python -m dmu_migrate.cli.reference docs/cli.md"

PREAMBLE = f"""\
# Command reference

<!-- Written by `{REGENERATE}` from each command's --help; do not edit by hand. -->

Every command below is printed as `dmu-migrate COMMAND --help` prints it. What
the commands do in depth: [training.md](training.md) (`train`, `evaluate`,
`transition`, `calibrate`), [evolve.md](evolve.md) (`evolve`, `verify`, `status`, `history`,
`rollback`, `prune`, `--target-uri`, shards), [backfill.md](backfill.md)
(`plan-backfill`, `backfill`).

Conventions shared by every command:

- Errors are one line on stderr naming the object and the fix. Exit codes: 0
  done, 2 bad input, 3 bad artifact, 4 store problem, 5 verification failed,
  6 refused by the quality gate, 75 stopped by `--max-seconds` with work left.
- Every command but `completion` takes `--json`: its result as one JSON
  document on stdout (progress and errors stay on stderr).
- `-v`, `-q` and `--log-format` go before or after the command.
- Every command's `--help` ends with an example, as below.

Shell completion of commands and flags: `completion` prints the script for
bash, zsh, fish or powershell; load it from the shell's startup file (the
first line, in `~/.bashrc`) or install it where bash-completion looks:

```bash
eval "$(dmu-migrate completion bash)"
dmu-migrate completion bash > ~/.local/share/bash-completion/completions/dmu-migrate
```
"""


def _commands() -> list[tuple[str, list[str]]]:
    """(title, argv after the program) for the program and each visible command."""
    group = typer.main.get_command(app)
    names = [n for n, c in group.commands.items() if not c.hidden]  # type: ignore[attr-defined]
    return [(PROGRAM, []), *((f"{PROGRAM} {n}", [n]) for n in names)]


def help_text(argv: list[str]) -> str:
    """What ``dmu-migrate ARGV --help`` prints, at WIDTH columns."""
    command = typer.main.get_command(app)
    ctx = command.make_context(
        PROGRAM, [], max_content_width=WIDTH, terminal_width=WIDTH, resilient_parsing=True
    )
    for name in argv:
        command = command.get_command(ctx, name)  # type: ignore[attr-defined]
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    return command.get_help(ctx).rstrip() + "\n"


def sections() -> list[tuple[str, str]]:
    """(title, Markdown section) for each command, in the order ``--help`` lists them."""
    out = []
    for title, argv in _commands():
        out.append((title, f"## {title}\n\n```text\n{help_text(argv)}```\n"))
    return out


def render() -> str:
    """The whole of docs/cli.md."""
    toc = "".join(f"- [{t}](#{t.replace(' ', '-')})\n" for t, _ in sections())
    return "\n".join([PREAMBLE, toc, *(body for _, body in sections())])


def main() -> None:
    text = render()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()

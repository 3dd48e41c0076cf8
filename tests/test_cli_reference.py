"""docs/cli.md is the commands' own --help: a changed flag or help text fails here until
the page is regenerated, so the reference cannot drift from the program."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dmu_migrate.cli import app
from dmu_migrate.cli.reference import REGENERATE, render, sections

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_docs_cli_md_is_the_current_help() -> None:
    page = PAGE.read_text()
    if page == render():
        return
    stale = [title for title, body in sections() if body not in page]
    where = f"at `{stale[0]} --help`" if stale else "in its preamble or order"
    raise AssertionError(f"docs/cli.md is out of date {where}; regenerate it: {REGENERATE}")


def test_every_command_has_a_section_with_its_real_help() -> None:
    """The rendered help is what the program prints (the page is not a separate text)."""
    titles = [title for title, _ in sections()]
    assert titles[0] == "dmu-migrate" and "dmu-migrate evolve" in titles
    assert "dmu-migrate completion" in titles and len(titles) == 16
    printed = CliRunner().invoke(
        app, ["sample", "--help"], prog_name="dmu-migrate", terminal_width=100
    )
    assert printed.exit_code == 0
    body = dict(sections())["dmu-migrate sample"]
    # Same words in the same order; line breaks may differ with the terminal's width.
    assert " ".join(printed.stdout.split()) in " ".join(body.split())

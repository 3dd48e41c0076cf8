"""The README is the front door: its commands must be the ones CI and users run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


# The two documented test commands: the fast suite (plain pytest; pyproject deselects the
# integration marker) and the integration suite.
FAST = 'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[dev]" && pytest'
INTEGRATION = "pytest -m integration"


def readme_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line for block in blocks for line in block.splitlines()]


def readme_commands() -> list[str]:
    return [line for line in readme_lines() if line.startswith("python3")]


def test_readme_and_ci_run_both_test_commands_in_order() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for where, lines in (("README.md", readme_lines()), (".ci/run", ci)):
        assert FAST in lines, f"{where} lacks the fast-suite command"
        assert INTEGRATION in lines, f"{where} lacks the integration command"
        assert lines.index(FAST) < lines.index(INTEGRATION), where


def test_plain_pytest_is_the_fast_suite() -> None:
    """pyproject deselects the integration tests unless -m asks for them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    options = config["ini_options"]
    assert "-m 'not integration'" in options["addopts"]
    assert any(m.startswith("integration:") for m in options["markers"])


def test_readme_demo_command_installs_what_demo_needs() -> None:
    demo_command = next(c for c in readme_commands() if c.endswith("dmu-migrate demo"))
    assert "torch==2.13.0" in demo_command and '".[train]"' in demo_command


def test_evolve_path_does_not_import_torch() -> None:
    """The cron image has no torch: evolve, evaluate and the CLI must load without it."""
    code = (
        "import sys, dmu_migrate.cli, dmu_migrate.evolve.pipeline, dmu_migrate.evaluation, "
        "dmu_migrate.stores.milvus; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

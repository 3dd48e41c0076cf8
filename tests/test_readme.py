"""The README is the front door: its commands must be the ones CI and users run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("python3")]


def test_ci_runs_the_readme_test_command() -> None:
    test_command = next(c for c in readme_commands() if c.endswith("&& pytest"))
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


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

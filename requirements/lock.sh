#!/bin/sh
# Re-pin requirements/evolve.lock: the base install (the evolve image, no torch)
# resolved in a fresh virtual environment, every package at one version. Run it
# from the repository root with the image's Python (3.11, Linux) after changing
# the dependencies in pyproject.toml, and commit the result.
set -eu
venv=$(mktemp -d)
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet .
{
    echo "# The evolve image's dependencies, pinned. Regenerate: sh requirements/lock.sh"
    "$venv/bin/pip" freeze --exclude dmu-migrate
} > requirements/evolve.lock
rm -rf "$venv"

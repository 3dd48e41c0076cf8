"""``python -m dmu_migrate`` runs the command line."""

from dmu_migrate.cli import main

main()

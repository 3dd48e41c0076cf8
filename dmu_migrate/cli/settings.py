"""A command's flags generated from its settings dataclass (dmu_migrate/settings.py).

``train`` (TrainConfig) and ``evolve`` (EvolveSettings) take their run settings
as ``**settings``; ``with_settings`` gives the command one option per field,
with the field's default, help and choices, so none is written twice. A flag
overrides ``--config`` only when the user typed it (``typed``), so these
defaults never mask the file.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from dmu_migrate.cli.common import choices
from dmu_migrate.settings import field_types


def setting_options(cls: type) -> list[inspect.Parameter]:
    """One keyword-only option per field of ``cls``, its default and help from the field."""
    defaults = cls()
    types = field_types(cls)
    options = []
    for f in dataclasses.fields(cls):
        kind = f.metadata.get("typed_as") or types[f.name]
        names = f.metadata.get("choices")
        option = typer.Option(
            help=f.metadata.get("help", ""),
            metavar=choices(names) if names else None,
        )
        options.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=getattr(defaults, f.name),
                annotation=Annotated[kind, option],
            )
        )
    return options


def with_settings(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command whose signature ends in ``**settings`` one option per field of ``cls``.

    They come after its positional-or-keyword options and before its keyword-only
    ones (``--json``), so --help lists the output options last.
    """

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        head = [p for p in params if p.kind != p.KEYWORD_ONLY]
        tail = [p for p in params if p.kind == p.KEYWORD_ONLY]
        command.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*head, *setting_options(cls), *tail]
        )
        return command

    return wrap


def typed(ctx: typer.Context, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings the user gave on the command line (or in the environment), not defaults."""
    return {
        key: value
        for key, value in settings.items()
        # Compared by name: typer may ship its own copy of click's enum.
        if getattr(ctx.get_parameter_source(key), "name", "DEFAULT") != "DEFAULT"
    }

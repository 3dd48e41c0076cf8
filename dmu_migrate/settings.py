"""Settings written once: a field with its default, help, choices and range, and a TOML file.

A command's run settings are one frozen dataclass whose fields are declared
with ``setting(...)`` (TrainConfig, EvolveSettings). From that one declaration
come the command's flags (cli/common.py ``with_settings``), the verb's
``**settings``, the keys of its ``--config`` TOML file and the checks, so a
default, a help text or a range never has a second copy to drift from.

Precedence is defaults < the TOML file < settings given explicitly (the flags
the user typed, or a verb's keyword arguments).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, TypeVar

from dmu_migrate.errors import InputError, check_range

T = TypeVar("T")


def flag(name: str) -> str:
    """The command-line flag of a setting, for error messages."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting takes: stated in its --help and checked by check_value()."""

    low: float
    high: float | None = None
    low_open: bool = False  # low itself is refused
    high_open: bool = False
    why: str = ""

    def text(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        return above and (value < self.high if self.high_open else value <= self.high)

    def check(self, name: str, value: float) -> None:
        """One line naming the flag, the range and the value."""
        if self.high is not None and not (self.low_open or self.high_open):
            # A closed range reads as words, in the wording every other command uses.
            check_range(flag(name), value, self.low, self.high, self.why)
        elif not self.holds(value):
            why = f" {self.why}" if self.why else ""
            raise InputError(f"{flag(name)} must be {self.text()}{why} (got {value})")


POSITIVE = Bounds(0, low_open=True)
NON_NEGATIVE = Bounds(0)
SHARE = Bounds(0, 1, high_open=True)


def setting(
    default: Any,
    help: str,
    choices: tuple[str, ...] | None = None,
    bounds: Bounds | None = None,
    typed_as: Any = None,
) -> Any:
    """A settings field with its help text: the one place a setting is written.

    The range, if any, is appended to the help. ``typed_as``: the type the
    command line reads when it differs from the field's (a C,H,W string for a
    tuple); the field's own conversion then happens in the verb.
    """
    if bounds is not None:
        help = f"{help.rstrip('.')} ({bounds.text()})."
    metadata = {"help": help, "choices": choices, "bounds": bounds, "typed_as": typed_as}
    if isinstance(default, tuple):
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_types(cls: type) -> dict[str, Any]:
    """Each field's type, evaluated (the modules use postponed annotations)."""
    return typing.get_type_hints(cls)


def check_value(field: dataclasses.Field[Any], value: Any) -> None:
    """A setting's value against its declared choices and range: one line, naming the flag."""
    allowed = field.metadata.get("choices")
    if allowed and value not in allowed:
        raise InputError(f"unknown {flag(field.name)} '{value}'; use one of {', '.join(allowed)}")
    bounds = field.metadata.get("bounds")
    if bounds is None or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{flag(field.name)} must be a number, got {value!r}")
    bounds.check(field.name, value)


def check_all(settings: Any) -> None:
    for f in dataclasses.fields(settings):
        check_value(f, getattr(settings, f.name))


def unknown_names(cls: type, what: str, names: Any) -> None:
    """Refuse keyword settings ``cls`` lacks, listing the valid ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise InputError(
            f"{what} got unknown setting(s) {', '.join(unknown)}; valid settings: "
            f"{', '.join(sorted(known))}"
        )


def _toml_types(kind: Any) -> tuple[type, ...]:
    """The TOML value types a field of type ``kind`` accepts (TOML has no null)."""
    if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union:
        return tuple(
            t for arg in typing.get_args(kind) if arg is not NoneType for t in _toml_types(arg)
        )
    if kind is float:
        return (float, int)  # TOML writes 1 for 1.0
    if kind is Path:
        return (str,)
    origin = typing.get_origin(kind)
    if origin in (tuple, list):
        return (list,)
    return (kind,)


def load_toml(
    path: str | Path,
    cls: type,
    section: str,
    types: dict[str, tuple[type, ...]] | None = None,
    convert: dict[str, Callable[[Any], Any]] | None = None,
) -> dict[str, Any]:
    """Fields of ``cls`` from a TOML file, at top level or under ``[section]``, type-checked.

    Keys are the setting names (dashes or underscores); an unknown key or a value
    of the wrong type is a one-line error naming the key and the file. ``types``
    overrides the accepted TOML types of some fields, ``convert`` turns a value
    into the field's type (paths become Path by themselves).
    """
    path = Path(path)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        try:
            import tomli as tomllib
        except ImportError:
            raise InputError(
                "--config needs Python >= 3.11 or the tomli package: pip install tomli"
            ) from None
    if not path.is_file():
        raise InputError(f"--config '{path}' does not exist; give the path of a TOML file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--config '{path}' is not valid TOML ({exc}); fix the file") from exc
    values = raw[section] if isinstance(raw.get(section), dict) else raw
    hints = field_types(cls)
    accepted = {name: _toml_types(kind) for name, kind in hints.items()} | (types or {})
    converters: dict[str, Callable[[Any], Any]] = {
        name: Path for name, kind in hints.items() if Path in _members(kind)
    }
    converters |= convert or {}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in accepted:
            raise InputError(
                f"--config '{path}' has unknown key '{key}'; valid keys: "
                f"{', '.join(sorted(accepted))}"
            )
        allowed = accepted[name]
        # bool is an int in Python; a true/false where a number belongs is a typo.
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if wrong_bool or not isinstance(value, allowed):
            raise InputError(
                f"--config '{path}': '{key}' is {type(value).__name__} {value!r}; "
                f"expected {' or '.join(t.__name__ for t in allowed)}"
            )
        out[name] = converters[name](value) if name in converters else value
    return out


def _members(kind: Any) -> tuple[Any, ...]:
    if isinstance(kind, UnionType) or typing.get_origin(kind) is typing.Union:
        return typing.get_args(kind)
    return (kind,)


def build(
    cls: type[T],
    file_values: dict[str, Any],
    given: dict[str, Any],
    config_file: str | Path | None = None,
) -> T:
    """Defaults, then the file, then the settings given; each checked, one line if wrong.

    A value from the file that fails its check names the file too, where the fix is.
    """
    values = {**file_values, **given}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in values:
            continue
        try:
            check_value(f, values[f.name])
        except InputError as exc:
            if f.name in given or config_file is None:
                raise
            raise InputError(f"{exc} (set in --config '{config_file}')") from None
    return cls(**values)

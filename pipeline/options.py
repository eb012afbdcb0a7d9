"""Stage options in one home: dataclass fields that carry their default, help text and choices, read
by the CLI (every ``vtl`` option is generated from them) and by config files (``vtl run``, a
benchmark's sources file) alike, so the two can never disagree. Also YAML loading and key/type
checks with one-line errors ("did you mean").

The rule is timm's: a config file sets only what the command line defines, with the same types
and defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from difflib import get_close_matches
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.errors import UserError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices: Iterable[str] | None = None,  # noqa: A002
           flags: tuple[str, ...] = (), metavar: str | None = None, factory: Callable[[], Any] | None = None,
           show_default: bool | str = True, parse: Callable[[Any], Any] | None = None, multiple: bool = False,
           cli: bool = True) -> Any:
    """A dataclass field that is also a command-line option.

    ``flags``: the option's names (default ``--field-name``); ``choices``: the allowed values
    (listed in ``--help``); ``parse``: turns the command line's text (or a config file's value)
    into the field's value, e.g. a comma-separated list into a tuple; ``multiple``: the option may be
    repeated, the field is a tuple of the values; ``cli=False``: a field only the Python API and
    config files set.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "flags": flags,
            "metavar": metavar, "show_default": show_default, "parse": parse, "multiple": multiple,
            "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def default_of(f: dataclasses.Field) -> Any:
    """A field's default (``MISSING`` for a required one)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# ----------------------------------------------------------------------------- YAML files


def load_yaml(path: Path, what: str = "a mapping of sections") -> dict[str, Any]:
    """A YAML file holding a mapping; anything else is one ``UserError`` line naming the file."""
    if not path.is_file():
        raise UserError(f"config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # one line, whatever PyYAML says
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected {what}")
    return data


def check_keys(given: Iterable[Any], allowed: Iterable[str], where: str) -> None:
    """Every key of ``given`` is in ``allowed``, else an error with the closest allowed key."""
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            close = get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{where}: unknown key {key!r}{hint}")


def build(cls: type[T], section: dict[str, Any], where: str) -> T:
    """``cls(**section)`` after checking keys and value types; any problem is one ``UserError`` line."""
    check_keys(section, field_names(cls), where)
    section = _parse(cls, section)
    section = _check_types(cls, section, where)
    try:
        return cls(**section)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None


def _parse(cls: type, section: dict[str, Any]) -> dict[str, Any]:
    """Values of fields with a ``parse`` function, parsed (already parsed values pass through)."""
    parsers = {f.name: f.metadata.get("parse") for f in dataclasses.fields(cls)}
    return {k: parsers[k](v) if parsers.get(k) and v is not None else v for k, v in section.items()}


def _check_types(cls: type, section: dict[str, Any], where: str) -> dict[str, Any]:
    """YAML gives ints, floats, strings, lists...: refuse a value of the wrong kind by name
    (``frames: 8.5`` would otherwise reach the sampler). YAML 1.1 reads ``1e-3`` as a
    string, so numeric strings are accepted where a float is expected."""
    hints = typing.get_type_hints(cls)
    out = dict(section)
    for key, value in section.items():
        allowed = _kinds(hints.get(key))
        if float in allowed and isinstance(value, str):
            with contextlib.suppress(ValueError):
                out[key] = value = float(value)
        if allowed and not any(_is(value, kind) for kind in allowed):
            names = " or ".join(k.__name__ if k is not type(None) else "empty" for k in allowed)
            raise UserError(f"{where}: {key} must be {names}, got {value!r}")
    return out


def _kinds(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    kinds = tuple(a for a in args if a in (int, float, str, bool, Path, type(None)))
    return kinds if len(kinds) == len(args) else ()  # anything fancier: left to the class


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is Path:
        return isinstance(value, (str, Path))
    return isinstance(value, kind)


def check_choices(config: Any) -> None:
    """Every field declared with ``choices`` holds one of them (the CLI checks this itself;
    config files and the Python API come through here)."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices and value is not None and value not in choices:
            raise UserError(f"unknown --{f.name.replace('_', '-')} {value!r}; choose one of {', '.join(choices)}")

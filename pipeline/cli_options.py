"""Click options generated from config dataclasses: one option per field, named, typed, defaulted,
documented and constrained by the field (see :func:`pipeline.options.option`), so the command line
cannot drift from config files and the Python API."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline.options import default_of


def options_from(cls: type) -> Callable[[Callable], Callable]:
    """Add one Click option per field of the dataclass ``cls``, in field order, named, typed,
    defaulted and documented by the field (see :func:`pipeline.options.option`)."""
    hints = typing.get_type_hints(cls)

    def decorate(command: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            if f.metadata.get("cli", True):
                command = _click_option(f, hints[f.name])(command)
        return command

    return decorate


def _click_option(f: dataclasses.Field, hint: Any) -> Callable[[Callable], Callable]:
    meta = f.metadata
    flags = meta.get("flags") or (f"--{f.name.replace('_', '-')}",)
    default = default_of(f)
    required = default is dataclasses.MISSING
    kind = next(a for a in typing.get_args(hint) or (hint,) if a is not type(None))
    common = {"help": meta.get("help"), "show_default": False if required else meta.get("show_default", True)}
    if kind is bool:
        if default is True:  # on unless switched off: --x/--no-x
            flags = tuple(f"{fl}/--no-{fl[2:]}" if fl.startswith("--") else fl for fl in flags)
        return click.option(*flags, f.name, is_flag=True, default=default, **common)
    if meta.get("multiple"):  # a tuple field: the option may be repeated
        return click.option(*flags, f.name, multiple=True, default=default, metavar=meta.get("metavar"), **common)
    if meta.get("choices"):
        click_type: Any = click.Choice(meta["choices"])
    elif meta.get("parse") or kind not in (int, float, str, Path):
        click_type = click.STRING  # text the field's parse function turns into its value
    else:
        click_type = click.Path(path_type=Path) if kind is Path else kind
    parse = meta.get("parse")
    callback = (lambda ctx, param, value: parse(value) if value is not None else None) if parse else None
    if not required:  # a required option gets no default at all (Click >= 8.3 takes None for a given default)
        common["default"] = default
    return click.option(*flags, f.name, type=click_type, required=required, metavar=meta.get("metavar"),
                        callback=callback, **common)


def given_on_command_line(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user wrote, leaving out those at their default."""
    ctx = click.get_current_context()
    return {k: v for k, v in options.items()
            if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}

"""Config dataclass fields that describe their command-line option as plain data: its help, choices or range,
metavar, and the tasks that take it. The commands make each Click option from its field (type, default and help
live once, here in the dataclass); the library checks values against the same field (:func:`check_fields`), for
values that never went through Click (a --space of vqtool tune, a caller of the library). No Click here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING

from vqtool.errors import VQError


def option(default=None, help: str | None = None, *, choices=None, min=None, max=None, min_open: bool = False,
           max_open: bool = False, metavar: str | None = None, show_default: bool = False, parameter: str | None = None,
           folder: bool = False, output: str | None = None, envvar: str | None = None, complete: str | None = None,
           tasks=None, flag: str | None = None, aliases=(), off_flag: str | None = None):
    """A dataclass field that is also a command's option (``--name-with-dashes``).

    ``help``: the option's text, or ``{command: text}`` where the commands that take it say it differently;
    ``min``/``max`` (``_open``: excluded) bound a number; ``choices`` a string. ``parameter``: the command's
    parameter name when not the field's (``model_name``); ``flag``: the option's when not ``--`` and the field's,
    ``aliases`` more of them (``-o``); ``folder``: the value is a folder's path; ``output``: a path vqtool writes,
    a ``file``, ``folder`` or ``either``; ``complete``: the name of a shell completer in the commands; ``tasks``: the
    tasks that take it (default: every task that takes the dataclass). A bool field is a flag, ``--name/--no-name``
    (or ``off_flag``) when its default is True.
    """
    spec = {"help": help, "choices": tuple(choices) if choices is not None else None, "min": min, "max": max,
            "min_open": min_open, "max_open": max_open, "metavar": metavar, "show_default": show_default,
            "parameter": parameter, "folder": folder, "envvar": envvar, "complete": complete,
            "tasks": tuple(tasks) if tasks is not None else None, "flag": flag, "aliases": tuple(aliases),
            "off_flag": off_flag, "output": output}
    return dataclasses.field(default=default, metadata={"option": spec})


@dataclasses.dataclass(frozen=True)
class OptionField:
    """What one option field says, resolved: the option's flag, parameter name, value type and default."""

    name: str
    kind: type  # int, float, str or bool (a ``| None`` stripped)
    default: object
    spec: dict

    @property
    def flag(self) -> str:
        return self.spec["flag"] or "--" + self.name.replace("_", "-")

    @property
    def parameter(self) -> str:
        return self.spec["parameter"] or self.name

    def taken_by(self, task: str) -> bool:
        return self.spec["tasks"] is None or task in self.spec["tasks"]


def option_fields(config, names=None) -> list[OptionField]:
    """The option fields of a config dataclass (or instance: its values are the defaults), in field order or in the
    order of ``names``."""
    cls = config if isinstance(config, type) else type(config)
    hints = typing.get_type_hints(cls)
    found = {}
    for item in dataclasses.fields(cls):
        if "option" not in item.metadata:
            continue
        default = item.default if isinstance(config, type) else getattr(config, item.name)
        found[item.name] = OptionField(item.name, _value_type(hints[item.name]),
                                       None if default is MISSING else default, item.metadata["option"])
    if names is None:
        return list(found.values())
    unknown = [name for name in names if name not in found]
    if unknown:
        raise KeyError(f"not option fields of {cls.__name__}: {', '.join(unknown)}")
    return [found[name] for name in names]


def field_parameters(*configs) -> dict[str, str]:
    """Each field of the configs -> the command parameter it is (an option field's ``parameter`` where it has one)."""
    options = {item.name: item.parameter for config in configs for item in option_fields(config)}
    return {item.name: options.get(item.name, item.name) for config in configs for item in dataclasses.fields(config)}


def parameter_names(*configs) -> frozenset:
    """The command parameter names of the configs' fields."""
    return frozenset(field_parameters(*configs).values())


def _value_type(hint) -> type:
    """``int | None`` -> int."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def check_fields(config) -> None:
    """Each option field's value in its choices or range (None where the default is None): a usage error naming
    the option."""
    for item in option_fields(type(config)):
        value, spec = getattr(config, item.name), item.spec
        if value is None and item.default is None:
            continue
        if spec["choices"] and value not in spec["choices"]:
            raise VQError(f"{item.flag} {value!r}: choose from {', '.join(spec['choices'])}", usage=True)
        if not _in_range(value, spec):
            raise VQError(f"{item.flag} must be {describe_range(spec)}, not {value!r}", usage=True)


def _in_range(value, spec: dict) -> bool:
    if spec["min"] is None and spec["max"] is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN is in no range
        return False
    low, high = spec["min"], spec["max"]
    return ((low is None or (value > low if spec["min_open"] else value >= low))
            and (high is None or (value < high if spec["max_open"] else value <= high)))


def describe_range(spec: dict) -> str:
    """``in [0, 1)``, ``>= 1``, ``> 0``."""
    low, high = spec["min"], spec["max"]
    if low is not None and high is not None:
        return f"in {'(' if spec['min_open'] else '['}{low:g}, {high:g}{')' if spec['max_open'] else ']'}"
    if low is not None:
        return f"{'>' if spec['min_open'] else '>='} {low:g}"
    return f"{'<' if spec['max_open'] else '<='} {high:g}"

"""Command-line flags generated from an options dataclass: one flag per field, help from the `Args:` docstring.

A bool field becomes `--name/--no-name`; a field whose metadata has `choices` gets them; a field that is itself an
options dataclass becomes an argument group of its own. So a new option is one field with one docstring line, and
the CLI, its defaults and its help cannot drift from the dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description from the class docstring's Google-style `Args:` section (continuations joined)."""
    docs: dict[str, str] = {}
    current = None
    in_args = False
    for line in (cls.__doc__ or "").splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        match = re.match(r"^ {8}(\w+): (.*)$", line)
        if match:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current and line.startswith(" " * 12):
            docs[current] += " " + line.strip()
        elif line.strip():
            current = None
    return docs


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """Add one flag per field of dataclass `cls` (and a group per nested options dataclass)."""
    group = parser.add_argument_group(title or cls.__name__)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            add_arguments(parser, kind, f.name)
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        text = docs.get(f.name, "")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        else:
            group.add_argument(flag, type=kind, default=default, choices=f.metadata.get("choices"), help=text)


def from_arguments(cls: type, args: argparse.Namespace) -> object:
    """An instance of `cls` from parsed flags (see `add_arguments`); the dataclass validates the values.

    Raises:
        ValueError: a value the dataclass rejects.
    """
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        values[f.name] = from_arguments(kind, args) if dataclasses.is_dataclass(kind) else getattr(args, f.name)
    return cls(**values)

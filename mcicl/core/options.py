"""Command-line options generated from config dataclass fields: a default, a type and a help text written once.

A job lists the config field paths it offers as options (``"permutations"``, ``"extraction.model"``). Each field
documents itself with :func:`doc` in its ``metadata``: the help text and, where the option is not ``--<field-name>``,
its flag. From the field's annotation and default come the rest: choices for a ``Literal``, a ``--flag`` that sets
True (or a ``--no-flag`` that sets False) for a ``bool``, ``A,B,...`` for a list, and ``(default: ...)`` in the help.

Options are parsed as text and converted by the same :func:`~mcicl.core.configuration.check_fields` that reads
``--config`` files, so a bad value gets one error shape wherever it was written. An option the user did not type is
absent from the parsed namespace (``argparse.SUPPRESS``), so it never overrides a value from the config file:
explicit option > ``--set`` > config file > default (:func:`resolve_config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcicl.core.configuration import ConfigError, check_fields, from_dict, merge, read_mapping

HELP, FLAG, METAVAR = "help", "flag", "metavar"


def doc(help: str, *, flag: str | None = None, metavar: str | None = None) -> dict[str, str]:
    """A config field's ``metadata``: its help text and, where it differs from ``--<field-name>``, its flag."""
    out = {HELP: help}
    if flag:
        out[FLAG] = flag
    if metavar:
        out[METAVAR] = metavar
    return out


@dataclass(frozen=True)
class ConfigOption:
    """One generated option: the config field ``path`` it sets and its ``flag``."""

    path: str
    flag: str
    help: str


def field_info(cls: type, path: str) -> tuple[dataclasses.Field, Any, Any]:
    """(field, annotation, default value) of the dotted ``path`` in config class ``cls``.

    The default is read from a default instance of the outer class where it can be built (a nested section's
    default may differ from its class's own default), else from the field itself.
    """
    *parents, leaf = path.split(".")
    owner, instance = cls, _default_instance(cls)
    for name in parents:
        owner = typing.get_type_hints(owner)[name]
        instance = getattr(instance, name, None) if instance is not None else None
        if instance is None:
            instance = _default_instance(owner)
    fields = {f.name: f for f in dataclasses.fields(owner)}
    if leaf not in fields:
        raise KeyError(f"{cls.__name__} has no field {path!r}")
    f = fields[leaf]
    default = getattr(instance, leaf) if instance is not None else (
        f.default if f.default is not dataclasses.MISSING else None)
    return f, typing.get_type_hints(owner)[leaf], default


def _default_instance(cls: type) -> Any:
    try:
        return cls()
    except (TypeError, ValueError):  # a config with required fields has no default instance
        return None


def _literal_choices(tp: Any) -> tuple | None:
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            found = _literal_choices(arg)
            if found:
                return found
    return None


def _is_bool(tp: Any) -> bool:
    return tp is bool or (typing.get_origin(tp) in (typing.Union, types.UnionType)
                          and set(typing.get_args(tp)) <= {bool, type(None)})


def _is_list(tp: Any) -> bool:
    tps = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return any(typing.get_origin(t) in (list, tuple) or t in (list, tuple) for t in tps)


def format_default(value: Any) -> str:
    """How a default reads in --help: lists as ``a,b,c``, None as 'none'."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def option_flag(cls: type, path: str, flags: Mapping[str, str] | None = None) -> str:
    """The flag of config field ``path``: the job's override, else the field's ``doc(flag=)``, else --<leaf>."""
    if flags and path in flags:
        return flags[path]
    f, _, _ = field_info(cls, path)
    return f.metadata.get(FLAG) or "--" + path.rsplit(".", 1)[-1].replace("_", "-")


def add_config_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, paths: Sequence[str],
                       flags: Mapping[str, str] | None = None) -> list[ConfigOption]:
    """Add one option per config field path; return what was added. Every field must carry a help text."""
    added = []
    for path in paths:
        f, tp, default = field_info(cls, path)
        if HELP not in f.metadata:
            raise TypeError(f"{cls.__name__}.{path} has no help text: give the field metadata=doc('...')")
        flag = option_flag(cls, path, flags)
        help_text = f.metadata[HELP]
        kwargs: dict[str, Any] = {"dest": path, "default": argparse.SUPPRESS}
        if _is_bool(tp):
            kwargs.update(action="store_const", const=not flag.startswith("--no-"))
        else:
            choices = _literal_choices(tp)
            if choices:
                kwargs["choices"] = [str(c) for c in choices]
            if choices and METAVAR in f.metadata:
                kwargs["metavar"] = f.metadata[METAVAR]
            elif not choices:
                kwargs["metavar"] = f.metadata.get(METAVAR) or path.rsplit(".", 1)[-1].upper()
            if "%(default)" not in help_text and "(default" not in help_text:
                help_text += f" (default: {format_default(default)})"
        parser.add_argument(flag, help=help_text.replace("%", "%%").replace("%%(default)s", "%(default)s"),
                            **kwargs)
        added.append(ConfigOption(path, flag, help_text))
    return added


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1, "c": 2} -> {"a": {"b": 1}, "c": 2}."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (the inverse of :func:`nest` for mappings)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolve_config(cls: type, *, file: str | Path | None = None, file_data: Mapping[str, Any] | None = None,
                   sets: Mapping[str, Any] | None = None, given: Mapping[str, Any] | None = None,
                   flags: Mapping[str, str] | None = None) -> tuple[Any, dict[str, str]]:
    """(config, sources): defaults, then the config file, then ``--set`` pairs, then the options typed.

    Each source is type-checked on its own first, so a bad value is refused even when a later source overrides
    it, and the error names where it was written. ``sources`` maps each field path set by a source to 'file
    PATH', '--set' or the option's flag; every other field is a default.
    """
    flags = dict(flags or {})
    layers: list[tuple[str, dict[str, Any]]] = []
    data = dict(file_data) if file_data is not None else (read_mapping(file) if file else {})
    if data:
        layers.append((f"config file {file}" if file else "config", data))
    if sets:
        layers.append(("--set", nest(dict(sets))))
    if given:
        layers.append(("options", nest(dict(given))))
    # A partial nested section is laid over its owner's default by from_dict (configuration._over_default).
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in layers:
        try:
            checked = check_fields(cls, values)
        except ConfigError as err:
            # A list item's error names the item (prompts.shots[1]); the option is the list's (--shots).
            where = flags.get(err.field.split("[", 1)[0]) if source == "options" else source
            raise ConfigError(err.field, err.value, err.accepted, source=where) from None
        for path in flatten(checked):
            sources[path] = flags.get(path, path) if source == "options" else source
        merged = merge(merged, checked)
    try:
        config = from_dict(cls, merged)
    except ConfigError as err:
        raise ConfigError(err.field, err.value, err.accepted, source=_source_of(err.field, sources)) from None
    return config, sources


def _source_of(field: str, sources: Mapping[str, str]) -> str | None:
    if field in sources:
        return sources[field]
    nested = [s for p, s in sources.items() if p.startswith(field + ".")]
    return nested[0] if nested else None

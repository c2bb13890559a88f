"""Dataclass configs: load from YAML/JSON/dicts, validate at the edge, save the resolved config.

Every config class is a plain ``@dataclass`` whose ``__post_init__`` checks values with :func:`require`.
:func:`from_dict` turns untrusted mappings (files, CLI overrides) into instances, rejecting unknown
fields and wrongly typed values with a :class:`ConfigError` that names the field, the bad value and what
is accepted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mcicl.core.textfiles import read_user_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is invalid; the message names the field, the value, what is accepted and, where known, where
    the value came from (``source``: a command-line option, ``--set``, or a config file)."""

    def __init__(self, field: str, value: Any, accepted: str, source: str | None = None):
        self.field, self.value, self.accepted, self.source = field, value, accepted, source
        where = f" (from {source})" if source else ""
        super().__init__(f"invalid config: {field}={value!r}{where}; accepted: {accepted}")


class ConfigFileError(ConfigError):
    """A config file as a whole cannot be read (not YAML/JSON, not a mapping, a key given twice)."""

    def __init__(self, path: str | Path, problem: str, accepted: str):
        ConfigError.__init__(self, str(path), problem, accepted)
        self.args = (f"config file {path}: {problem}; accepted: {accepted}",)

    def __str__(self) -> str:
        return str(self.args[0])


# A config class may rename fields without breaking users' files: ``RENAMED = {"old_key": "new.path"}`` (a
# ClassVar). from_dict moves an old key to its new place with a DeprecationWarning that names the new key.
RENAMED_ATTR = "RENAMED"


def require(ok: bool, field: str, value: Any, accepted: str) -> None:
    """Raise ConfigError(field, value, accepted) unless ``ok``."""
    if not ok:
        raise ConfigError(field, value, accepted)


def names_or_none(value: Any, field: str, accepted: Sequence[str]) -> list[str]:
    """A list of names from a list or a comma-separated string, each one of ``accepted``; ``none`` (alone) is the
    empty list (how --baselines is written)."""
    names = [b for b in value.split(",") if b] if isinstance(value, str) else list(value)
    names = [] if names == ["none"] else names
    for name in names:
        require(name in accepted, field, name, "a list of " + ", ".join(accepted) + ", or none")
    return names


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, field: str) -> Any:
    """Convert ``value`` to type ``tp`` (as written in the dataclass annotation) or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, field)
            except ConfigError as err:
                # an item of a list failed: say it is the list's items that must be of that kind
                errors.append(f"a list whose items are each {err.accepted}" if err.field != field else err.accepted)
        choices = list(dict.fromkeys(errors + (["null"] if type(None) in args else [])))
        raise ConfigError(field, value, " or ".join(choices))
    if origin is typing.Literal:
        require(value in args, field, value, "one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):  # CLI form: "1,2,4"
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        require(isinstance(value, (list, tuple)), field, value, f"a list ({_type_name(tp)})")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{field}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            require(len(value) == len(args), field, value, f"a list of {len(args)} items")
            return tuple(_coerce(v, a, f"{field}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin or tp) is tuple else out
    if origin is dict or tp is dict:
        require(isinstance(value, Mapping), field, value, "a mapping")
        if len(args) == 2:
            return {_coerce(k, args[0], field): _coerce(v, args[1], f"{field}.{k}") for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        require(isinstance(value, Mapping), field, value, f"a mapping of {tp.__name__} fields")
        return from_dict(tp, value, prefix=f"{field}.")
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        require(isinstance(value, bool), field, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        require(isinstance(value, int) and not isinstance(value, bool), field, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        require(isinstance(value, (int, float)) and not isinstance(value, bool), field, value, "a number")
        return float(value)
    if tp is str:
        require(isinstance(value, str), field, value, "a string")
        return value
    if tp is Path:
        require(isinstance(value, (str, Path)), field, value, "a path")
        return Path(value)
    return value


def renamed_keys(cls: type, data: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """``data`` with ``cls``'s renamed (deprecated) keys moved to their new dotted paths, each with a
    DeprecationWarning naming the new key; the old and the new key together are refused."""
    renamed: Mapping[str, str] = getattr(cls, RENAMED_ATTR, {}) or {}
    out = dict(data)
    for old, new in renamed.items():
        if old not in out:
            continue
        value = out.pop(old)
        *parents, leaf = new.split(".")
        node = out
        for name in parents:
            child = node.get(name)
            if child is None:
                child = {}
            elif not isinstance(child, Mapping):
                raise ConfigError(prefix + name, child, f"a mapping (it holds {new}, the new name of {old})")
            node[name] = child = dict(child)
            node = child
        if leaf in node:
            raise ConfigError(prefix + old, value, f"only one of {prefix + old} (deprecated) and {prefix + new}")
        node[leaf] = value
        warnings.warn(f"config key {prefix + old!r} is deprecated; use {prefix + new!r}", DeprecationWarning,
                      stacklevel=3)
        logging.getLogger("mcicl").warning("config key %r is deprecated; use %r", prefix + old, prefix + new)
    return out


def _known_fields(cls: type, data: Any, prefix: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(data with renamed keys moved, cls's init fields, its type hints); a non-mapping or an unknown key is a
    ConfigError naming it."""
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip(".") or "config", data, f"a mapping of {cls.__name__} fields")
    data = renamed_keys(cls, data, prefix=prefix)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(prefix + unknown[0], data[unknown[0]], "one of the fields " + ", ".join(fields))
    return data, fields, hints


def check_fields(cls: type, data: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """``data`` (one source of config values: a file, ``--set`` pairs, options) with every value converted to its
    field's type; unknown keys, wrong types and non-mappings for nested sections raise ConfigError. Values are
    not range-checked here (``__post_init__`` does that once every source is merged)."""
    data, fields, hints = _known_fields(cls, data, prefix)
    out = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            out[name] = check_fields(tp, value, prefix=f"{prefix}{name}.")
        else:
            out[name] = _coerce(value, tp, prefix + name)
    return out


def from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build a ``cls`` instance from a mapping, rejecting unknown fields and coercing types."""
    data, fields, hints = _known_fields(cls, data, prefix)
    kwargs = {name: _coerce(_over_default(fields[name], hints[name], value), hints[name], prefix + name)
              for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix and not err.field.startswith(prefix):
            raise ConfigError(prefix + err.field, err.value, err.accepted) from None
        raise


def _over_default(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """A nested section given as a mapping, laid over the section's default in its owner (which may differ from
    its class's own defaults: probe attention's prompts default to shots 2,4,8), so a partial section keeps the
    owner's defaults for the keys it does not give."""
    if not (dataclasses.is_dataclass(tp) and isinstance(value, Mapping)) or f.default_factory is dataclasses.MISSING:
        return value
    base = f.default_factory()
    try:
        own = tp()
    except (TypeError, ValueError):  # a section with required fields has no class defaults to differ from
        own = None
    if not isinstance(base, tp) or base == own:
        return value  # the class's own defaults: nothing to lay the mapping over
    return merge(to_dict(base), renamed_keys(tp, value))


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file holding a mapping; a key given twice (at any depth) is refused, not overwritten."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = read_user_text(path, "config file")
    try:
        data = json.loads(text, object_pairs_hook=_unique_json_pairs) if path.suffix == ".json" else \
            yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind, detail = ("JSON" if path.suffix == ".json" else "YAML"), " ".join(str(err).split())
        raise ConfigFileError(path, f"not valid {kind} ({detail})", "a YAML or JSON mapping of field: value") from None
    except _DuplicateKey as dup:
        raise ConfigFileError(path, f"key {dup.key!r} is given twice", "each key once per section") from None
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigFileError(path, f"holds a {type(data).__name__}, not a mapping", "a mapping of field: value")
    return dict(data)


class _DuplicateKey(Exception):
    def __init__(self, key: Any):
        self.key = key


def _unique_json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping key given twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``, nested mappings merged key by key; None values in ``overrides`` are
    ignored (an option the user did not give)."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        elif isinstance(value, Mapping):
            nested = merge({}, value)
            if nested:
                out[key] = nested
        else:
            out[key] = value
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Defaults, then the file at ``path`` (YAML/JSON), then ``overrides`` (merged into nested sections;
    None values are ignored)."""
    return from_dict(cls, merge(read_mapping(path) if path else {}, overrides or {}))


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-safe dict of a dataclass config."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def save_config(config: Any, path: str | Path, sources: Mapping[str, str] | None = None) -> None:
    """Write the resolved config as YAML; with ``sources`` ({field path: origin}), each value set by the user ends
    in a ``# from ...`` comment (every other value is a default). The file loads back as the same config."""
    data = to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
    text = yaml.safe_dump(data, sort_keys=False)
    if sources:
        text = annotate_yaml(text, sources)
    Path(path).write_text(text)


def annotate_yaml(text: str, sources: Mapping[str, str]) -> str:
    """Append ``# from SOURCE`` to the YAML lines of block-style keys whose dotted path is in ``sources``."""
    out, stack = [], []  # stack: (indent, key) of the mappings the current line sits in
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        key = stripped.split(":", 1)[0] if ":" in stripped and not stripped.startswith(("- ", "#")) else None
        if key is not None and " " not in key:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([k for _, k in stack] + [key])
            value = stripped.split(":", 1)[1].strip()
            if path in sources and value:
                line = f"{line}  # from {sources[path]}"
            stack.append((indent, key))
        out.append(line)
    return "\n".join(out) + "\n"

"""The settings of a check: the command line, ``[tool.kstructs.check]`` in the
checked project's ``pyproject.toml``, and what a module declares itself.

A setting given on the command line wins over ``pyproject.toml``, which wins
over the module's own declaration (``HEADER``, ``TAGS``, ``SKIP``...). The
``pyproject.toml`` table holds options for every module at its top level and
one sub-table per module::

    [tool.kstructs.check]
    include-dirs = ["include"]

    [tool.kstructs.check."mylib.raw"]
    headers = ["linux/videodev2.h"]
    tags = { "v4l2_fmt_union" = "struct v4l2_format.fmt" }
    fields = { "v4l2_buffer.m_offset" = "m.offset" }
    constants = { "BufType.*" = "V4L2_BUF_TYPE_*" }
    skip = { "struct v4l2_ext_control" = "packed in C, not in the binding" }
    prefix = ["v4l2_ctrl_head"]
    values = "width"
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kstructs.errors import CheckError

VALUE_MODES = ("exact", "width")

# pyproject key -> ModuleSettings attribute, and the type the value must have
_MODULE_KEYS: Mapping[str, tuple[str, type]] = {
    "headers": ("headers", list),
    "header": ("headers", list),
    "include-dirs": ("include_dirs", list),
    "defines": ("defines", list),
    "tags": ("tags", dict),
    "fields": ("fields", dict),
    "constants": ("constants", dict),
    "skip": ("skip", dict),
    "prefix": ("prefix", list),
    "values": ("values", str),
    "width": ("width", list),
    "not-mirrored": ("not_mirrored", dict),
    "added-in": ("added_in", dict),
    "complete": ("complete", bool),
}
_GLOBAL_KEYS: Mapping[str, type] = {
    "modules": list,
    "cc": str,
    "target": str,
    "python": str,
    "btf": str,
    "strict": bool,
}


@dataclass
class ModuleSettings:
    """What to check one module against, and how to read it."""

    module: str
    headers: list[str] = field(default_factory=list)
    include_dirs: list[str] = field(default_factory=list)
    defines: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # class -> C type spelling
    fields: dict[str, str] = field(default_factory=dict)  # "Class.name" -> C member name
    constants: dict[str, str] = field(default_factory=dict)  # Python name -> C expression
    skip: dict[str, str] = field(default_factory=dict)  # C item -> reason
    prefix: list[str] = field(default_factory=list)  # classes mirroring a leading part only
    values: str | None = None  # "exact" (default) or "width"
    width: list[str] = field(default_factory=list)  # constants compared at the C type's width
    not_mirrored: dict[str, str] = field(default_factory=dict)
    added_in: dict[str, str] = field(default_factory=dict)
    complete: bool | None = None  # header items the binding lacks are mismatches


@dataclass
class Options:
    """The whole check: modules, each with its settings, and the run's options."""

    modules: list[ModuleSettings]
    cc: str | None = None
    target: str | None = None
    python: str | None = None
    btf: str | None = None
    strict: bool = False
    json: bool = False
    project: str | None = None  # the pyproject.toml read, if any


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` from ``start`` upwards that has the table."""
    for d in [start, *start.parents]:
        p = d / "pyproject.toml"
        if p.is_file():
            return p
    return None


def _typed(where: str, value: Any, kind: type) -> Any:
    if kind is list and isinstance(value, str):
        return [value]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CheckError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise CheckError(f"{where}: expected a list of strings")
    if isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
        raise CheckError(f"{where}: expected a table of strings")
    return value


def read_pyproject(path: Path) -> tuple[dict[str, Any], dict[str, ModuleSettings]]:
    """Global options and per-module settings from ``[tool.kstructs.check]``."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise CheckError(f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CheckError(f"{path}: {e}") from None
    table = data.get("tool", {}).get("kstructs", {}).get("check", {})
    if not isinstance(table, dict):
        raise CheckError(f"{path}: [tool.kstructs.check] is not a table")
    base = path.parent
    options: dict[str, Any] = {}
    modules: dict[str, ModuleSettings] = {}
    shared = ModuleSettings("")
    for name, value in table.items():
        where = f"{path}: tool.kstructs.check.{name}"
        if isinstance(value, dict) and name not in _MODULE_KEYS:
            modules[name] = _module_table(where, name, value, base)
        elif name in _GLOBAL_KEYS:
            options[name] = _typed(where, value, _GLOBAL_KEYS[name])
        elif name in _MODULE_KEYS:
            attr, kind = _MODULE_KEYS[name]
            setattr(shared, attr, _paths(attr, _typed(where, value, kind), base))
        else:
            raise CheckError(f"{where}: unknown key")
    merged = {n: _merge(shared, m) for n, m in modules.items()}
    options["shared"] = shared
    return options, merged


def _paths(attr: str, value: Any, base: Path) -> Any:
    if attr == "include_dirs":
        return [str((base / v).resolve()) for v in value]
    return value


def _module_table(where: str, name: str, table: Mapping[str, Any], base: Path) -> ModuleSettings:
    settings = ModuleSettings(name)
    for k, v in table.items():
        if k not in _MODULE_KEYS:
            raise CheckError(f"{where}.{k}: unknown key")
        attr, kind = _MODULE_KEYS[k]
        setattr(settings, attr, _paths(attr, _typed(f"{where}.{k}", v, kind), base))
    if settings.values is not None and settings.values not in VALUE_MODES:
        raise CheckError(f"{where}.values: {settings.values!r} is not one of {', '.join(VALUE_MODES)}")
    return settings


def _merge(low: ModuleSettings, high: ModuleSettings) -> ModuleSettings:
    """``high`` over ``low``: lists add up, tables update, single values replace."""
    out = replace(low, module=high.module or low.module)
    for attr in vars(high):
        mine, theirs = getattr(out, attr), getattr(high, attr)
        if attr == "module":
            continue
        if isinstance(theirs, list):
            setattr(out, attr, list(dict.fromkeys([*mine, *theirs])))
        elif isinstance(theirs, dict):
            setattr(out, attr, {**mine, **theirs})
        elif theirs is not None:
            setattr(out, attr, theirs)
    return out


def declared(module: str, settings: Mapping[str, Any]) -> ModuleSettings:
    """What a module declares itself (the document's ``settings`` entry)."""
    headers = [str(h) for h in settings.get("HEADERS", ())]
    if "HEADER" in settings:
        headers.insert(0, str(settings["HEADER"]))
    values = settings.get("VALUES")
    return ModuleSettings(
        module,
        headers=headers,
        tags=dict(settings.get("TAGS", {})),
        fields=dict(settings.get("FIELDS", {})),
        skip=dict(settings.get("SKIP", {})),
        prefix=list(settings.get("PREFIX", ())),
        values=values if isinstance(values, str) else None,
        not_mirrored=dict(settings.get("NOT_MIRRORED", {})),
        added_in=dict(settings.get("ADDED_IN", {})),
        # A module that names its header and its constants itself claims to mirror all of it.
        complete=True if "HEADER" in settings and "CONSTANTS" in settings else None,
    )


def resolve(own: ModuleSettings, project: ModuleSettings | None, command_line: ModuleSettings) -> ModuleSettings:
    """The settings one module is checked with."""
    merged = own if project is None else _merge(own, project)
    merged = _merge(merged, command_line)
    if merged.values is not None and merged.values not in VALUE_MODES:
        raise CheckError(f"values: {merged.values!r} is not one of {', '.join(VALUE_MODES)}")
    return merged


def pairs(option: str, entries: Sequence[str], *, optional_value: bool = False) -> dict[str, str]:
    """``NAME=VALUE`` entries of a repeatable option."""
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        name, value = name.strip(), value.strip()
        if not name or (not sep and not optional_value) or (sep and not value and not optional_value):
            raise CheckError(f"{option} {entry!r}: expected NAME=VALUE")
        out[name] = value
    return out

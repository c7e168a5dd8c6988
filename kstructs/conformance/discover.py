"""What a module's ctypes binding says, as plain data: the binding side of a check.

Everything is found by introspection: every ``Structure``/``Union`` subclass
(module globals, classes nested in them, and the types their fields reach,
``_anonymous_`` members included), the module-level integer constants spelled
like C macros, and the members of ``IntEnum``/``IntFlag`` classes. Each layout
is described by the numbers this interpreter's ctypes computes: sizes,
alignments, offsets, array lengths, signedness, and for every bitfield the
bytes of a zeroed instance with that field set to -1 and to 1.

This file imports nothing but the standard library and nothing from its own
package, so that ``kstructs check --python INTERP`` can run it as a script in
another interpreter (a 32-bit one, or one under an emulator) and read the same
document back as JSON::

    INTERP discover.py [--path DIR]... MODULE...

The document is plain JSON types only; ``kstructs.conformance.model`` reads it.
"""

from __future__ import annotations

import ctypes
import enum
import importlib
import importlib.util
import json
import os
import re
import struct
import sys
from typing import Any

FORMAT = 1  # the version of the document below

# Module-level names that the header modules use to declare their settings.
SETTINGS = (
    "HEADER",
    "HEADERS",
    "TYPES",
    "CONSTANTS",
    "MACRO_FUNCTIONS",
    "NOT_MIRRORED",
    "ADDED_IN",
    "TAGS",
    "FIELDS",
    "PREFIX",
    "SKIP",
    "VALUES",
)

_C_CONSTANT = re.compile(r"_*[A-Z][A-Z0-9_]*\Z")

# ctypes simple type codes -> kind
_CODES = {
    "c": "char",
    "u": "char",  # wchar_t
    "?": "bool",
    "f": "float",
    "d": "float",
    "g": "float",
    "P": "pointer",
    "z": "pointer",
    "Z": "pointer",
    "O": "object",
}


class DiscoverError(Exception):
    """The module cannot be imported or described."""


def load(spec: str) -> Any:
    """Import a module by name, or from a path to a .py file."""
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise DiscoverError(f"no such file: {spec}")
        name = os.path.splitext(os.path.basename(path))[0]
        found = importlib.util.spec_from_file_location(name, path)
        if found is None or found.loader is None:
            raise DiscoverError(f"cannot import {spec}")
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        try:
            found.loader.exec_module(module)
        except Exception as e:
            raise DiscoverError(f"cannot import {spec}: {type(e).__name__}: {e}") from None
        return module
    try:
        return importlib.import_module(spec)
    except Exception as e:  # any import-time failure is the module's, not ours
        raise DiscoverError(f"cannot import {spec}: {type(e).__name__}: {e}") from None


def is_record(t: object) -> bool:
    return isinstance(t, type) and issubclass(t, (ctypes.Structure, ctypes.Union))


def key(cls: type) -> str:
    """A class's identity in the document: module and qualified name."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _swapped(cls: type) -> bool:
    """A structure in the byte order opposite to this machine's."""
    other = "BigEndian" if sys.byteorder == "little" else "LittleEndian"
    bases = [getattr(ctypes, other + "Structure", None), getattr(ctypes, other + "Union", None)]
    native = (ctypes.Structure, ctypes.Union)
    return any(b is not None and b not in native and issubclass(cls, b) for b in bases)


def _fields_of(cls: type) -> list[tuple[Any, ...]] | None:
    """The ``_fields_`` entries of a class and its bases, base first; None if opaque."""
    entries: list[tuple[Any, ...]] = []
    seen = False
    for c in reversed(cls.__mro__):
        if "_fields_" in c.__dict__:
            seen = True
            entries += [tuple(e) for e in c.__dict__["_fields_"]]
    return entries if seen else None


def _anonymous_of(cls: type) -> list[str]:
    names: list[str] = []
    for c in reversed(cls.__mro__):
        names += list(c.__dict__.get("_anonymous_", ()))
    return names


def describe_type(t: Any, reached: list[type]) -> dict[str, Any]:
    """A field type: kind, size, and what the kind needs."""
    size = ctypes.sizeof(t)
    if is_record(t):
        reached.append(t)
        return {"kind": "record", "ref": key(t), "size": size}
    if isinstance(t, type) and issubclass(t, ctypes.Array):
        elem = describe_type(t._type_, reached)
        length = int(t._length_)  # type: ignore[call-overload]
        return {"kind": "array", "elem": elem, "length": length, "size": size}
    if isinstance(t, type) and issubclass(t, ctypes._Pointer):
        target = t._type_
        to = key(target) if is_record(target) else None
        return {"kind": "pointer", "to": to, "size": size}
    if isinstance(t, type) and issubclass(t, ctypes._CFuncPtr):  # type: ignore[attr-defined]
        return {"kind": "funcptr", "size": size}
    code = getattr(t, "_type_", None)
    if isinstance(t, type) and issubclass(t, ctypes._SimpleCData) and isinstance(code, str):
        kind = _CODES.get(code, "int")
        out: dict[str, Any] = {"kind": kind, "size": size, "code": code}
        if kind == "int":
            out["signed"] = bool(t(-1).value < 0)
        return out
    return {"kind": "other", "size": size, "name": getattr(t, "__name__", repr(t))}


def _masks(cls: type, name: str) -> dict[str, str]:
    """The bytes of a zeroed instance with one field set to -1, then 1 (as hex)."""
    out = {}
    for value in (-1, 1):
        obj = cls()
        setattr(obj, name, value)
        out[str(value)] = bytes(obj).hex()
    return out


def _requested_align(cls: type) -> int | None:
    """The ``_align_`` a class asks for (CPython 3.13 honours it; older ctypes ignores it)."""
    value = getattr(cls, "_align_", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def describe_record(cls: type, reached: list[type]) -> dict[str, Any]:
    entries = _fields_of(cls)
    union = issubclass(cls, ctypes.Union)
    record: dict[str, Any] = {
        "key": key(cls),
        "name": cls.__name__,
        "qualname": cls.__qualname__,
        "module": cls.__module__,
        "kind": "union" if union else "struct",
        "size": ctypes.sizeof(cls),
        "align": ctypes.alignment(cls),
        "align_requested": _requested_align(cls),
        "opaque": entries is None,
        "pack": getattr(cls, "_pack_", None),
        "swapped": _swapped(cls),
        "anonymous": _anonymous_of(cls),
        "fields": [],
    }
    for entry in entries or ():
        name, ftype = entry[0], entry[1]
        descriptor = getattr(cls, name)
        f: dict[str, Any] = {"name": name, "offset": int(descriptor.offset), "type": describe_type(ftype, reached)}
        if len(entry) > 2:
            f["bits"] = int(entry[2])
            f["masks"] = _masks(cls, name)
        record["fields"].append(f)
    return record


def _enum_members(cls: type) -> dict[str, int]:
    return {m.name: int(m.value) for m in cls if m.name is not None}  # type: ignore[attr-defined]


def _nested(cls: type) -> list[type]:
    return [v for v in vars(cls).values() if is_record(v) and v is not cls]


def describe_module(module: Any) -> dict[str, Any]:
    """The document for one module: its records, constants, enums and settings."""
    namespace = vars(module)
    found: list[type] = []
    enums: dict[str, dict[str, int]] = {}
    constants: dict[str, int] = {}
    for name, value in namespace.items():
        if is_record(value) and value.__module__ == module.__name__:
            found.append(value)
        elif (
            isinstance(value, type)
            and issubclass(value, (enum.IntEnum, enum.IntFlag))
            and value.__module__ == module.__name__
        ):
            enums[value.__qualname__] = _enum_members(value)
        elif type(value) is int and _C_CONSTANT.match(name):
            constants[name] = value
    declared = [c for c in namespace.get("TYPES", ()) if is_record(c)]
    roots = list(dict.fromkeys(declared or found))
    records: dict[str, dict[str, Any]] = {}
    queue = list(roots)
    while queue:  # breadth-first over nested classes and field types: no recursion on input depth
        cls = queue.pop(0)
        if key(cls) in records:
            continue
        reached: list[type] = []
        records[key(cls)] = describe_record(cls, reached)
        queue += reached + _nested(cls)
    settings: dict[str, Any] = {}
    for name in SETTINGS:
        if name not in namespace:
            continue
        value = namespace[name]
        if name == "TYPES":
            settings[name] = [key(c) for c in value if is_record(c)]
        elif name == "MACRO_FUNCTIONS":
            settings[name] = sorted(value)
        elif name in ("PREFIX",):
            settings[name] = [key(c) if is_record(c) else str(c) for c in value]
        elif name in ("TAGS",):
            settings[name] = {key(c) if is_record(c) else str(c): str(v) for c, v in value.items()}
        elif isinstance(value, dict):
            settings[name] = {str(k): v for k, v in value.items()}
        elif isinstance(value, (list, tuple)):
            settings[name] = [str(v) for v in value]
        else:
            settings[name] = value
    if "CONSTANTS" in settings:
        constants = {n: namespace[n] for n in settings["CONSTANTS"] if type(namespace.get(n)) is int}
    return {
        "name": module.__name__,
        "file": getattr(module, "__file__", None),
        "roots": [key(c) for c in roots],
        "records": list(records.values()),
        "constants": constants,
        "enums": enums,
        "settings": settings,
    }


def abi() -> dict[str, int]:
    """This interpreter's data model: what a C target must share for layouts to compare."""

    class LL(ctypes.Structure):
        _fields_ = (("c", ctypes.c_char), ("x", ctypes.c_longlong))

    class D(ctypes.Structure):
        _fields_ = (("c", ctypes.c_char), ("x", ctypes.c_double))

    return {
        "pointer_size": struct.calcsize("P"),
        "long_size": ctypes.sizeof(ctypes.c_long),
        "long_long_align": LL.x.offset,
        "double_align": D.x.offset,
        "big_endian": int(sys.byteorder == "big"),
    }


def document(specs: list[str]) -> dict[str, Any]:
    """The whole document: this interpreter, then one entry per module."""
    return {
        "format": FORMAT,
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "byteorder": sys.byteorder,
        "pointer_size": struct.calcsize("P"),
        "long_size": ctypes.sizeof(ctypes.c_long),
        "long_double_size": ctypes.sizeof(ctypes.c_longdouble),
        "abi": abi(),
        "modules": [describe_module(load(s)) for s in specs],
    }


def main(argv: list[str]) -> int:
    paths: list[str] = []
    specs: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--path":
            paths.append(next(args, "."))
        else:
            specs.append(arg)
    sys.path[:0] = paths
    try:
        doc: dict[str, Any] = document(specs)
    except DiscoverError as e:
        doc = {"format": FORMAT, "error": str(e)}
    except Exception as e:  # report, never a traceback: the caller reads JSON
        doc = {"format": FORMAT, "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

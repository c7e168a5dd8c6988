"""Helpers the header modules use to describe what they mirror."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_C_CONSTANT = re.compile(r"_*[A-Z][A-Z0-9_]*")


def constants(namespace: Mapping[str, object], exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """Names of the integer C constants (macros and enumerators) in a module
    namespace: every C-spelled name bound to an integer (an ``int`` or an
    ``IntEnum``/``IntFlag`` member, not a bool), wherever it sits, except the
    names in ``exclude``."""
    skip = set(exclude)
    return tuple(
        name
        for name, value in namespace.items()
        if isinstance(value, int) and not isinstance(value, bool) and _C_CONSTANT.fullmatch(name) and name not in skip
    )


def prefixed(namespace: Mapping[str, object], prefix: str) -> tuple[str, ...]:
    """Names of the integer C constants in a namespace that start with ``prefix``."""
    return tuple(name for name in constants(namespace) if name.startswith(prefix))

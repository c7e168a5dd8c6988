"""Every class, constant and length helper of the three header modules against
the C compiler and the installed headers.

Items newer than the installed headers skip here with the version that added
them; tests/test_header_diff.py checks them against the running kernel's BTF.
"""

from __future__ import annotations

import ctypes
from types import ModuleType

import pytest
from conftest import (
    PROC_EVENT_ALIGN_REASON,
    PROC_EVENT_UNDERALIGNED,
    LayoutCase,
    c_values,
    layout_cases,
    present,
    skip_if_newer,
)

from kstructs import cn_proc, connector, netlink

MODULES = (netlink, connector, cn_proc)
CASES = [(m, case) for m in MODULES for case in layout_cases(m.TYPES)]
CONSTANTS = [(m, name) for m in MODULES for name in m.CONSTANTS]
LENGTHS = [*range(0, 70), 4095, 4096, 16383, 16384, 65535]
HELPERS = [(m, macro) for m in MODULES for macro in m.MACRO_FUNCTIONS if macro != "valid_event"]
TYPES = [cls for m in MODULES for cls in m.TYPES]


@pytest.mark.cc
@pytest.mark.parametrize(("module", "case"), CASES, ids=[c.id for _, c in CASES])
def test_class_layout_matches_compiler(module: ModuleType, case: LayoutCase) -> None:
    skip_if_newer(case.since_key, module.ADDED_IN)
    wanted = [c for m, c in CASES if present([c.since_key], m.ADDED_IN)]
    value = c_values({c.id: c.c_expr for c in wanted})[case.id]
    if case.python != value and case.id == "struct proc_event:align" and PROC_EVENT_UNDERALIGNED:
        pytest.xfail(PROC_EVENT_ALIGN_REASON)
    assert case.python == value


@pytest.mark.cc
@pytest.mark.parametrize(("module", "name"), CONSTANTS, ids=[n for _, n in CONSTANTS])
def test_constant_matches_header(module: ModuleType, name: str) -> None:
    skip_if_newer(name, module.ADDED_IN)
    value = c_values({n: n for m, n in CONSTANTS if present([n], m.ADDED_IN)})[name]
    assert getattr(module, name) == value


@pytest.mark.cc
@pytest.mark.parametrize(("module", "macro"), HELPERS, ids=[m for _, m in HELPERS])
def test_length_helper_matches_macro(module: ModuleType, macro: str) -> None:
    skip_if_newer(macro, module.ADDED_IN)
    values = c_values({f"{macro}({n})": f"{macro}({n})" for n in LENGTHS})
    helper = module.MACRO_FUNCTIONS[macro]
    assert {n: helper(n) for n in LENGTHS} == {n: values[f"{macro}({n})"] for n in LENGTHS}


@pytest.mark.parametrize("cls", TYPES, ids=[c.__name__ for c in TYPES])
def test_annotations_follow_fields(cls: type[ctypes.Structure]) -> None:
    assert list(cls.__annotations__) == [f[0] for f in cls._fields_]
    for _, ftype, *_ in cls._fields_:
        if isinstance(ftype, type) and issubclass(ftype, ctypes.Structure | ctypes.Union) and "__" in ftype.__name__:
            # an anonymous member type: named parent__member, annotated the same way
            assert list(ftype.__annotations__) == [f[0] for f in ftype._fields_]


@pytest.mark.parametrize("module", MODULES, ids=[m.__name__ for m in MODULES])
def test_public_names_are_exported(module: ModuleType) -> None:
    import kstructs

    for name in [*module.CONSTANTS, *module.LAYOUT_CONSTANTS, *(c.__name__ for c in module.TYPES)]:
        assert name in module.__all__
        if name in kstructs.__all__:  # the package exports only what users need
            assert getattr(kstructs, name) is getattr(module, name)

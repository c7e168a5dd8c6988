"""<linux/cn_proc.h>: constants and layouts against the classes and the C compiler."""

from __future__ import annotations

import ast
import ctypes
import functools
import operator
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import c_values, present, skip_if_newer

from kstructs import _abi, cn_proc, connector, netlink
from kstructs.cn_proc import (
    EventKind,
    comm_proc_event,
    coredump_proc_event,
    exec_proc_event,
    exit_proc_event,
    fork_proc_event,
    id_proc_event,
    proc_event,
    proc_event__ack,
    proc_input,
    ptrace_proc_event,
    sid_proc_event,
)

CType = type[ctypes.Structure] | type[ctypes.Union]
ACK = "((struct proc_event *)0)->event_data.ack"


def _off(cls: CType, field: str) -> tuple[str, Callable[[], int]]:
    return f"offsetof(struct {cls.__name__}, {field})", lambda: int(getattr(cls, field).offset)


def _size(cls: CType) -> tuple[str, Callable[[], int]]:
    return f"sizeof(struct {cls.__name__})", lambda: ctypes.sizeof(cls)


# Each layout constant: the C expression that defines it, and the same fact read off the classes.
LAYOUT: dict[str, tuple[str, Callable[[], int]]] = {
    "PROC_EVENT_HEADER_SIZE": _off(proc_event, "event_data"),
    "SIZE_PROC_EVENT": _size(proc_event),
    "SIZE_PROC_INPUT": _size(proc_input),
    "SIZE_ACK_EVENT": (f"sizeof({ACK})", lambda: ctypes.sizeof(proc_event__ack)),
    "SIZE_FORK_EVENT": _size(fork_proc_event),
    "SIZE_EXEC_EVENT": _size(exec_proc_event),
    "SIZE_ID_EVENT": _size(id_proc_event),
    "SIZE_SID_EVENT": _size(sid_proc_event),
    "SIZE_PTRACE_EVENT": _size(ptrace_proc_event),
    "SIZE_COMM_EVENT": _size(comm_proc_event),
    "SIZE_COREDUMP_EVENT": _size(coredump_proc_event),
    "SIZE_EXIT_EVENT": _size(exit_proc_event),
    "ACK_ERR": (f"(char *)&{ACK}.err - (char *)&{ACK}", lambda: proc_event__ack.err.offset),
    "FORK_PARENT_PID": _off(fork_proc_event, "parent_pid"),
    "FORK_PARENT_TGID": _off(fork_proc_event, "parent_tgid"),
    "FORK_CHILD_PID": _off(fork_proc_event, "child_pid"),
    "FORK_CHILD_TGID": _off(fork_proc_event, "child_tgid"),
    "EXEC_PID": _off(exec_proc_event, "process_pid"),
    "EXEC_TGID": _off(exec_proc_event, "process_tgid"),
    "ID_PID": _off(id_proc_event, "process_pid"),
    "ID_TGID": _off(id_proc_event, "process_tgid"),
    "ID_RUID_RGID": _off(id_proc_event, "r"),
    "ID_EUID_EGID": _off(id_proc_event, "e"),
    "SID_PID": _off(sid_proc_event, "process_pid"),
    "SID_TGID": _off(sid_proc_event, "process_tgid"),
    "PTRACE_PID": _off(ptrace_proc_event, "process_pid"),
    "PTRACE_TGID": _off(ptrace_proc_event, "process_tgid"),
    "PTRACE_TRACER_PID": _off(ptrace_proc_event, "tracer_pid"),
    "PTRACE_TRACER_TGID": _off(ptrace_proc_event, "tracer_tgid"),
    "COMM_PID": _off(comm_proc_event, "process_pid"),
    "COMM_TGID": _off(comm_proc_event, "process_tgid"),
    "COMM_DATA": _off(comm_proc_event, "comm"),
    "COREDUMP_PID": _off(coredump_proc_event, "process_pid"),
    "COREDUMP_TGID": _off(coredump_proc_event, "process_tgid"),
    "COREDUMP_PARENT_PID": _off(coredump_proc_event, "parent_pid"),
    "COREDUMP_PARENT_TGID": _off(coredump_proc_event, "parent_tgid"),
    "EXIT_PID": _off(exit_proc_event, "process_pid"),
    "EXIT_TGID": _off(exit_proc_event, "process_tgid"),
    "EXIT_CODE": _off(exit_proc_event, "exit_code"),
    "EXIT_SIGNAL": _off(exit_proc_event, "exit_signal"),
    "EXIT_PARENT_PID": _off(exit_proc_event, "parent_pid"),
    "EXIT_PARENT_TGID": _off(exit_proc_event, "parent_tgid"),
}
NEEDS = {"SIZE_PROC_INPUT": "struct proc_input"}


def test_every_layout_constant_has_a_case() -> None:
    assert sorted(LAYOUT) == sorted(cn_proc.LAYOUT_CONSTANTS)


@pytest.mark.parametrize("name", list(LAYOUT))
def test_layout_constant_matches_classes(name: str) -> None:
    assert getattr(cn_proc, name) == LAYOUT[name][1]()


@pytest.mark.cc
@pytest.mark.parametrize("name", list(LAYOUT))
def test_layout_constant_matches_compiler(name: str) -> None:
    skip_if_newer(NEEDS.get(name, name), cn_proc.ADDED_IN)
    exprs = {n: LAYOUT[n][0] for n in LAYOUT if n not in NEEDS or present([NEEDS[n]], cn_proc.ADDED_IN)}
    assert getattr(cn_proc, name) == c_values(exprs)[name]


@pytest.mark.cc
@pytest.mark.parametrize("ev_type", [0, 1, 0x200, 0x400, 0x20000000, 0xFFFFFFFF, 0x80000001])
def test_valid_event_matches_header(ev_type: int) -> None:
    skip_if_newer("valid_event", cn_proc.ADDED_IN)
    expr = f"(unsigned)valid_event((enum proc_cn_event){ev_type:#x}u)"
    assert cn_proc.valid_event(ev_type) == c_values({"v": expr})["v"]


def test_event_kind_is_built_on_the_constants() -> None:
    for kind in EventKind:
        assert kind.value == getattr(cn_proc, f"PROC_EVENT_{kind.name}")
    every = functools.reduce(operator.or_, (kind for kind in EventKind if kind))
    assert EventKind(cn_proc.PROC_EVENT_ALL) == every


def test_proc_event_reads_at_a_four_byte_aligned_offset() -> None:
    # On the wire proc_event starts at byte 36; from_buffer_copy must not care.
    order = sys.byteorder  # proc_event is in the host's byte order
    raw = bytes(36) + (0x80000000).to_bytes(4, order) + (1).to_bytes(4, order) + (7).to_bytes(8, order)
    raw += (42).to_bytes(4, order, signed=True) + bytes(20)
    event = proc_event.from_buffer_copy(raw, 36)
    assert (event.what, event.cpu, event.timestamp_ns, event.event_data.exit.process_pid) == (0x80000000, 1, 7, 42)


# --- Which constants the conformance check sees ------------------------------
#
# Truth is the module's source: every module-level name in C spelling bound to
# an integer is either checked against the headers (CONSTANTS) or named as a
# layout constant (LAYOUT_CONSTANTS, held to the classes and the compiler
# above), wherever it sits in the file and whatever its int type.

_C_SPELLED = re.compile(r"_*[A-Z][A-Z0-9_]*")
_METADATA = {"HEADER", "TYPES", "CONSTANTS", "LAYOUT_CONSTANTS", "MACRO_FUNCTIONS", "NOT_MIRRORED", "ADDED_IN"}


def _assigned_names(module: types.ModuleType) -> list[str]:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    names: list[str] = []
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


@pytest.mark.parametrize("module", [netlink, connector, cn_proc], ids=lambda m: m.__name__)
def test_every_c_constant_is_checked_or_named_as_layout(module: types.ModuleType) -> None:
    constants = [n for n in _assigned_names(module) if _C_SPELLED.fullmatch(n) and n not in _METADATA]
    assert constants  # the scan found the module's constants
    checked, layout = set(module.CONSTANTS), set(module.LAYOUT_CONSTANTS)
    assert not checked & layout
    for name in constants:
        assert isinstance(getattr(module, name), int), name
        assert name in checked or name in layout, f"{module.__name__}.{name} is neither checked nor a layout constant"
    assert layout <= set(constants)


def test_a_constant_after_the_layout_constants_is_still_checked() -> None:
    # The rule does not depend on position or on the exact int type.
    namespace = {"SIZE_FORK_EVENT": 16, "PROC_EVENT_FUTURE": 0x800, "PROC_KIND": EventKind.FORK, "FLAG": True}
    assert _abi.constants(namespace, exclude=["SIZE_FORK_EVENT"]) == ("PROC_EVENT_FUTURE", "PROC_KIND")

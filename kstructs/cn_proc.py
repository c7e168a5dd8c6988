"""``<linux/cn_proc.h>``: process events, as of Linux 6.18.

The kernel multicasts one ``struct proc_event`` per fork, exec, id change,
ptrace, comm change, core dump and exit to group ``CN_IDX_PROC`` of
``NETLINK_CONNECTOR``. In a datagram it follows ``struct nlmsghdr`` (16 bytes)
and ``struct cn_msg`` (20 bytes), so it starts at byte 36: 4-byte aligned
only, although ``timestamp_ns`` is declared ``aligned(8)``. Read it with
``from_buffer_copy``, never in place.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from kstructs import _abi

if TYPE_CHECKING:
    from kstructs._typing import S32, U32, U64, Chars, Nested

HEADER: Final = "linux/cn_proc.h"

# include/uapi/linux/cn_proc.h: enum proc_cn_mcast_op, sent to subscribe
PROC_CN_MCAST_LISTEN: Final = 1
PROC_CN_MCAST_IGNORE: Final = 2

# include/uapi/linux/cn_proc.h: enum proc_cn_event (``enum what`` inside
# struct proc_event before Linux 6.6). Successive bits, so a set of kinds is
# a mask: the event_type of struct proc_input.
PROC_EVENT_NONE: Final = 0x00000000
PROC_EVENT_FORK: Final = 0x00000001
PROC_EVENT_EXEC: Final = 0x00000002
PROC_EVENT_UID: Final = 0x00000004
PROC_EVENT_GID: Final = 0x00000040
PROC_EVENT_SID: Final = 0x00000080
PROC_EVENT_PTRACE: Final = 0x00000100  # Linux 3.1
PROC_EVENT_COMM: Final = 0x00000200  # Linux 3.2
# Linux 6.6: sent only as a filter bit in proc_input.event_type; a non-zero
# exit still arrives as PROC_EVENT_EXIT.
PROC_EVENT_NONZERO_EXIT: Final = 0x20000000
PROC_EVENT_COREDUMP: Final = 0x40000000  # Linux 3.10
PROC_EVENT_EXIT: Final = 0x80000000

# Linux 6.6: every kind, the mask that means "no filtering"
PROC_EVENT_ALL: Final = (
    PROC_EVENT_FORK
    | PROC_EVENT_EXEC
    | PROC_EVENT_UID
    | PROC_EVENT_GID
    | PROC_EVENT_SID
    | PROC_EVENT_PTRACE
    | PROC_EVENT_COMM
    | PROC_EVENT_NONZERO_EXIT
    | PROC_EVENT_COREDUMP
    | PROC_EVENT_EXIT
)


def valid_event(ev_type: int) -> int:
    """``valid_event()`` of the header: the bits of ``ev_type`` that name event kinds."""
    return ev_type & PROC_EVENT_ALL


class EventKind(enum.IntFlag):
    """The ``PROC_EVENT_*`` bits as a flag set."""

    NONE = PROC_EVENT_NONE
    FORK = PROC_EVENT_FORK
    EXEC = PROC_EVENT_EXEC
    UID = PROC_EVENT_UID
    GID = PROC_EVENT_GID
    SID = PROC_EVENT_SID
    PTRACE = PROC_EVENT_PTRACE
    COMM = PROC_EVENT_COMM
    NONZERO_EXIT = PROC_EVENT_NONZERO_EXIT
    COREDUMP = PROC_EVENT_COREDUMP
    EXIT = PROC_EVENT_EXIT


# The members of the event_data union. ``__kernel_pid_t`` is a signed int;
# everything else is unsigned.


class proc_event__ack(ctypes.Structure):
    """The anonymous ``struct { __u32 err; } ack`` of ``event_data``."""

    err: U32
    _fields_ = [("err", ctypes.c_uint32)]


class fork_proc_event(ctypes.Structure):
    parent_pid: S32
    parent_tgid: S32
    child_pid: S32
    child_tgid: S32
    _fields_ = [
        ("parent_pid", ctypes.c_int32),
        ("parent_tgid", ctypes.c_int32),
        ("child_pid", ctypes.c_int32),
        ("child_tgid", ctypes.c_int32),
    ]


class exec_proc_event(ctypes.Structure):
    process_pid: S32
    process_tgid: S32
    _fields_ = [
        ("process_pid", ctypes.c_int32),
        ("process_tgid", ctypes.c_int32),
    ]


class id_proc_event__r(ctypes.Union):
    """The anonymous ``union { __u32 ruid; __u32 rgid; } r`` of ``id_proc_event``."""

    ruid: U32
    rgid: U32
    _fields_ = [
        ("ruid", ctypes.c_uint32),
        ("rgid", ctypes.c_uint32),
    ]


class id_proc_event__e(ctypes.Union):
    """The anonymous ``union { __u32 euid; __u32 egid; } e`` of ``id_proc_event``."""

    euid: U32
    egid: U32
    _fields_ = [
        ("euid", ctypes.c_uint32),
        ("egid", ctypes.c_uint32),
    ]


class id_proc_event(ctypes.Structure):
    # One layout for PROC_EVENT_UID and PROC_EVENT_GID: the unions name the
    # same word for both.
    process_pid: S32
    process_tgid: S32
    r: Nested[id_proc_event__r]
    e: Nested[id_proc_event__e]
    _fields_ = [
        ("process_pid", ctypes.c_int32),
        ("process_tgid", ctypes.c_int32),
        ("r", id_proc_event__r),
        ("e", id_proc_event__e),
    ]


class sid_proc_event(ctypes.Structure):
    process_pid: S32
    process_tgid: S32
    _fields_ = [
        ("process_pid", ctypes.c_int32),
        ("process_tgid", ctypes.c_int32),
    ]


class ptrace_proc_event(ctypes.Structure):
    process_pid: S32
    process_tgid: S32
    tracer_pid: S32
    tracer_tgid: S32
    _fields_ = [
        ("process_pid", ctypes.c_int32),
        ("process_tgid", ctypes.c_int32),
        ("tracer_pid", ctypes.c_int32),
        ("tracer_tgid", ctypes.c_int32),
    ]


class comm_proc_event(ctypes.Structure):
    process_pid: S32
    process_tgid: S32
    comm: Chars
    _fields_ = [
        ("process_pid", ctypes.c_int32),
        ("process_tgid", ctypes.c_int32),
        ("comm", ctypes.c_char * 16),
    ]


class coredump_proc_event(ctypes.Structure):
    process_pid: S32
    process_tgid: S32
    parent_pid: S32  # Linux 4.18
    parent_tgid: S32  # Linux 4.18
    _fields_ = [
        ("process_pid", ctypes.c_int32),
        ("process_tgid", ctypes.c_int32),
        ("parent_pid", ctypes.c_int32),
        ("parent_tgid", ctypes.c_int32),
    ]


class exit_proc_event(ctypes.Structure):
    process_pid: S32
    process_tgid: S32
    exit_code: U32
    exit_signal: U32
    parent_pid: S32  # Linux 4.18
    parent_tgid: S32  # Linux 4.18
    _fields_ = [
        ("process_pid", ctypes.c_int32),
        ("process_tgid", ctypes.c_int32),
        ("exit_code", ctypes.c_uint32),
        ("exit_signal", ctypes.c_uint32),
        ("parent_pid", ctypes.c_int32),
        ("parent_tgid", ctypes.c_int32),
    ]


class proc_event__event_data(ctypes.Union):
    """The anonymous ``event_data`` union: one member per event kind."""

    ack: Nested[proc_event__ack]
    fork: Nested[fork_proc_event]
    exec: Nested[exec_proc_event]
    id: Nested[id_proc_event]
    sid: Nested[sid_proc_event]
    ptrace: Nested[ptrace_proc_event]
    comm: Nested[comm_proc_event]
    coredump: Nested[coredump_proc_event]
    exit: Nested[exit_proc_event]
    _fields_ = [
        ("ack", proc_event__ack),
        ("fork", fork_proc_event),
        ("exec", exec_proc_event),
        ("id", id_proc_event),
        ("sid", sid_proc_event),
        ("ptrace", ptrace_proc_event),
        ("comm", comm_proc_event),
        ("coredump", coredump_proc_event),
        ("exit", exit_proc_event),
    ]


class proc_event(ctypes.Structure):
    """``timestamp_ns`` is ``__u64 __attribute__((aligned(8)))``, so the struct is
    8-aligned on every ABI; ``_align_`` says so, and ctypes honours it from CPython
    3.13. Before 3.13 on 32-bit x86 (i686), where ``__u64`` is 4-aligned, the class
    is 4-aligned: its size and offsets are right and datagram parsing is unaffected,
    but a ctypes struct that embeds it after a member ending at a 4-byte multiple
    places it 4 bytes early (after ``cn_msg``: offset 20, where C has 24)."""

    _align_ = 8
    what: U32  # enum proc_cn_event: no negative values, so unsigned int
    cpu: U32
    timestamp_ns: U64
    event_data: Nested[proc_event__event_data]
    _fields_ = [
        ("what", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("timestamp_ns", ctypes.c_uint64),
        ("event_data", proc_event__event_data),
    ]


class proc_input(ctypes.Structure):
    """Linux 6.6: a subscribe request that carries an event filter."""

    mcast_op: U32  # enum proc_cn_mcast_op
    event_type: U32  # enum proc_cn_event: a mask of PROC_EVENT_* bits
    _fields_ = [
        ("mcast_op", ctypes.c_uint32),
        ("event_type", ctypes.c_uint32),
    ]


# Layout facts stated independently of the classes; tests hold them to both
# the classes and the C compiler. Offsets of the member structs are relative
# to the start of event_data.
PROC_EVENT_HEADER_SIZE: Final = 16
SIZE_PROC_EVENT: Final = 40
SIZE_PROC_INPUT: Final = 8
SIZE_ACK_EVENT: Final = 4
SIZE_FORK_EVENT: Final = 16
SIZE_EXEC_EVENT: Final = 8
SIZE_ID_EVENT: Final = 16
SIZE_SID_EVENT: Final = 8
SIZE_PTRACE_EVENT: Final = 16
SIZE_COMM_EVENT: Final = 24
SIZE_COREDUMP_EVENT: Final = 16
SIZE_EXIT_EVENT: Final = 24
ACK_ERR: Final = 0
FORK_PARENT_PID: Final = 0
FORK_PARENT_TGID: Final = 4
FORK_CHILD_PID: Final = 8
FORK_CHILD_TGID: Final = 12
EXEC_PID: Final = 0
EXEC_TGID: Final = 4
ID_PID: Final = 0
ID_TGID: Final = 4
ID_RUID_RGID: Final = 8
ID_EUID_EGID: Final = 12
SID_PID: Final = 0
SID_TGID: Final = 4
PTRACE_PID: Final = 0
PTRACE_TGID: Final = 4
PTRACE_TRACER_PID: Final = 8
PTRACE_TRACER_TGID: Final = 12
COMM_PID: Final = 0
COMM_TGID: Final = 4
COMM_DATA: Final = 8
COREDUMP_PID: Final = 0
COREDUMP_TGID: Final = 4
COREDUMP_PARENT_PID: Final = 8
COREDUMP_PARENT_TGID: Final = 12
EXIT_PID: Final = 0
EXIT_TGID: Final = 4
EXIT_CODE: Final = 8
EXIT_SIGNAL: Final = 12
EXIT_PARENT_PID: Final = 16
EXIT_PARENT_TGID: Final = 20
# Named, not found by position: whatever else is C-spelled is checked
# against the headers.
LAYOUT_CONSTANTS: Final = (
    "PROC_EVENT_HEADER_SIZE",
    "SIZE_PROC_EVENT",
    "SIZE_PROC_INPUT",
    "SIZE_ACK_EVENT",
    "SIZE_FORK_EVENT",
    "SIZE_EXEC_EVENT",
    "SIZE_ID_EVENT",
    "SIZE_SID_EVENT",
    "SIZE_PTRACE_EVENT",
    "SIZE_COMM_EVENT",
    "SIZE_COREDUMP_EVENT",
    "SIZE_EXIT_EVENT",
    "ACK_ERR",
    "FORK_PARENT_PID",
    "FORK_PARENT_TGID",
    "FORK_CHILD_PID",
    "FORK_CHILD_TGID",
    "EXEC_PID",
    "EXEC_TGID",
    "ID_PID",
    "ID_TGID",
    "ID_RUID_RGID",
    "ID_EUID_EGID",
    "SID_PID",
    "SID_TGID",
    "PTRACE_PID",
    "PTRACE_TGID",
    "PTRACE_TRACER_PID",
    "PTRACE_TRACER_TGID",
    "COMM_PID",
    "COMM_TGID",
    "COMM_DATA",
    "COREDUMP_PID",
    "COREDUMP_TGID",
    "COREDUMP_PARENT_PID",
    "COREDUMP_PARENT_TGID",
    "EXIT_PID",
    "EXIT_TGID",
    "EXIT_CODE",
    "EXIT_SIGNAL",
    "EXIT_PARENT_PID",
    "EXIT_PARENT_TGID",
)

# What this module mirrors, for conformance checks (tools/header_diff.py).
TYPES: Final = (
    fork_proc_event,
    exec_proc_event,
    id_proc_event,
    sid_proc_event,
    ptrace_proc_event,
    comm_proc_event,
    coredump_proc_event,
    exit_proc_event,
    proc_event,
    proc_input,
)
CONSTANTS: Final = _abi.constants(globals(), exclude=LAYOUT_CONSTANTS)
MACRO_FUNCTIONS: Final[Mapping[str, Callable[[int], int]]] = {"valid_event": valid_event}
NOT_MIRRORED: Final[Mapping[str, str]] = {}
# First mainline release whose UAPI header had the item, for items after 2.6.15.
ADDED_IN: Final[Mapping[str, str]] = {
    "PROC_EVENT_SID": "2.6.32",
    "struct sid_proc_event": "2.6.32",
    "PROC_EVENT_PTRACE": "3.1",
    "struct ptrace_proc_event": "3.1",
    "PROC_EVENT_COMM": "3.2",
    "struct comm_proc_event": "3.2",
    "PROC_EVENT_COREDUMP": "3.10",
    "struct coredump_proc_event": "3.10",
    "struct coredump_proc_event.parent_pid": "4.18",
    "struct coredump_proc_event.parent_tgid": "4.18",
    "struct exit_proc_event.parent_pid": "4.18",
    "struct exit_proc_event.parent_tgid": "4.18",
    "PROC_EVENT_NONZERO_EXIT": "6.6",
    "PROC_EVENT_ALL": "6.6",
    "struct proc_input": "6.6",
    "valid_event": "6.6",
}

__all__ = [
    "PROC_CN_MCAST_LISTEN",
    "PROC_CN_MCAST_IGNORE",
    "PROC_EVENT_NONE",
    "PROC_EVENT_FORK",
    "PROC_EVENT_EXEC",
    "PROC_EVENT_UID",
    "PROC_EVENT_GID",
    "PROC_EVENT_SID",
    "PROC_EVENT_PTRACE",
    "PROC_EVENT_COMM",
    "PROC_EVENT_NONZERO_EXIT",
    "PROC_EVENT_COREDUMP",
    "PROC_EVENT_EXIT",
    "PROC_EVENT_ALL",
    "proc_event__ack",
    "id_proc_event__r",
    "id_proc_event__e",
    "proc_event__event_data",
    "fork_proc_event",
    "exec_proc_event",
    "id_proc_event",
    "sid_proc_event",
    "ptrace_proc_event",
    "comm_proc_event",
    "coredump_proc_event",
    "exit_proc_event",
    "proc_event",
    "proc_input",
    "EventKind",
    "valid_event",
]
__all__.extend(LAYOUT_CONSTANTS)  # the seed's layout constants, importable under their names

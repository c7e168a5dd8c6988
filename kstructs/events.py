"""Process events from bytes, and subscribe requests to bytes. No I/O.

``parse_events(data)`` turns one datagram read from a ``NETLINK_CONNECTOR``
socket into typed, immutable values, one class per event kind, with the
kernel's field names. It never touches a socket: a reader is ``recv`` then
``parse_events``, and a test or a fuzzer can feed it any bytes.

What a datagram holds (``drivers/connector/cn_proc.c``): a ``struct
nlmsghdr`` of type ``NLMSG_DONE``, a ``struct cn_msg`` with id
``{CN_IDX_PROC, CN_VAL_PROC}`` and ``len`` bytes of payload, the ``struct
proc_event``. Every offset below comes from the ctypes layouts of the header
modules, never from a literal.

Netlink control messages surface as values too: ``NLMSG_NOOP`` is skipped,
``NLMSG_ERROR`` becomes a ``NetlinkErrorMessage`` and ``NLMSG_OVERRUN`` an
``Overrun``. Malformed input raises ``ParseError`` and nothing else.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, NamedTuple, TypeAlias

from kstructs import cn_proc
from kstructs._typing import Buffer
from kstructs.cn_proc import (
    PROC_CN_MCAST_IGNORE,
    PROC_CN_MCAST_LISTEN,
    PROC_EVENT_ALL,
    PROC_EVENT_COMM,
    PROC_EVENT_COREDUMP,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_GID,
    PROC_EVENT_NONE,
    PROC_EVENT_NONZERO_EXIT,
    PROC_EVENT_PTRACE,
    PROC_EVENT_SID,
    PROC_EVENT_UID,
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
    valid_event,
)
from kstructs.connector import CN_IDX_PROC, CN_VAL_PROC, cn_msg
from kstructs.errors import KstructsError, ParseError
from kstructs.netlink import (
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDRLEN,
    NLMSG_NOOP,
    NLMSG_OVERRUN,
    nlmsg_align,
    nlmsg_length,
    nlmsgerr,
    nlmsghdr,
)

# --- Event values ----------------------------------------------------------
#
# One class per kind: a named tuple whose fields are the kernel's, in the
# order the kernel lays them out in the datagram. Every process event starts
# with ``seq`` (``cn_msg.seq``: a per-CPU counter), ``cpu`` and
# ``timestamp_ns`` (``ktime_get_ns()``: CLOCK_MONOTONIC), then the member of
# ``event_data`` under the kernel's field names. Being tuples in wire order,
# they come straight out of one ``struct.unpack_from``. ``event`` is the CLI's
# name of the kind and ``what`` the kernel's ``PROC_EVENT_*`` value.


class _Value(tuple[Any, ...]):
    """What every event value shares. Equality and hashing count the class
    too: an ``ExecEvent`` never equals a ``SidEvent`` with the same numbers."""

    __slots__ = ()
    event: ClassVar[str]

    def to_dict(self) -> dict[str, object]:
        """The keys and values of one ``kstructs watch --format json`` line."""
        fields: tuple[str, ...] = self._fields  # type: ignore[attr-defined]  # the NamedTuple base's
        return {"event": self.event, **dict(zip(fields, self, strict=True))}

    def __eq__(self, other: object) -> bool:
        if type(self) is type(other):
            return tuple.__eq__(self, other)
        # Another kind, or a plain tuple: not equal. Anything else decides.
        return False if isinstance(other, tuple) else NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((type(self), tuple(self)))


class _Fork(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    parent_pid: int
    parent_tgid: int
    child_pid: int  # != child_tgid: a new thread
    child_tgid: int


class ForkEvent(_Value, _Fork):
    __slots__ = ()
    event: ClassVar[str] = "fork"
    what: ClassVar[int] = PROC_EVENT_FORK


class _Exec(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    process_pid: int
    process_tgid: int


class ExecEvent(_Value, _Exec):
    __slots__ = ()
    event: ClassVar[str] = "exec"
    what: ClassVar[int] = PROC_EVENT_EXEC


class _Uid(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    process_pid: int
    process_tgid: int
    ruid: int
    euid: int


class UidEvent(_Value, _Uid):
    __slots__ = ()
    event: ClassVar[str] = "uid"
    what: ClassVar[int] = PROC_EVENT_UID


class _Gid(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    process_pid: int
    process_tgid: int
    rgid: int
    egid: int


class GidEvent(_Value, _Gid):
    __slots__ = ()
    event: ClassVar[str] = "gid"
    what: ClassVar[int] = PROC_EVENT_GID


class _Sid(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    process_pid: int
    process_tgid: int


class SidEvent(_Value, _Sid):
    __slots__ = ()
    event: ClassVar[str] = "sid"
    what: ClassVar[int] = PROC_EVENT_SID


class _Ptrace(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    process_pid: int
    process_tgid: int
    tracer_pid: int  # 0 on PTRACE_DETACH
    tracer_tgid: int


class PtraceEvent(_Value, _Ptrace):
    __slots__ = ()
    event: ClassVar[str] = "ptrace"
    what: ClassVar[int] = PROC_EVENT_PTRACE


class _Comm(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    process_pid: int
    process_tgid: int
    # The kernel's bytes up to the first NUL, decoded as UTF-8 with
    # surrogateescape: os.fsencode(comm) gives the bytes back.
    comm: str


class CommEvent(_Value, _Comm):
    __slots__ = ()
    event: ClassVar[str] = "comm"
    what: ClassVar[int] = PROC_EVENT_COMM


class _Coredump(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    process_pid: int
    process_tgid: int
    parent_pid: int  # Linux 4.18; 0 when the kernel did not send it or the parent is gone
    parent_tgid: int


class CoredumpEvent(_Value, _Coredump):
    __slots__ = ()
    event: ClassVar[str] = "coredump"
    what: ClassVar[int] = PROC_EVENT_COREDUMP


class _Exit(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    process_pid: int
    process_tgid: int
    # task->exit_code: a wait(2) status, so exit(3) reads 0x300 and a kill
    # by SIGKILL reads 9 (| 0x80 with a core dump).
    exit_code: int
    # task->exit_signal as __u32: SIGCHLD (17) for a process, 0xffffffff (-1)
    # for a thread that is not the group leader.
    exit_signal: int
    parent_pid: int  # Linux 4.18; 0 when the kernel did not send it or the parent is gone
    parent_tgid: int


class ExitEvent(_Value, _Exit):
    __slots__ = ()
    event: ClassVar[str] = "exit"
    what: ClassVar[int] = PROC_EVENT_EXIT


class _Ack(NamedTuple):
    seq: int
    ack: int  # cn_msg.ack: in the datagram, between seq and the proc_event
    cpu: int
    timestamp_ns: int
    err: int


class AckEvent(_Value, _Ack):
    """The reply to a subscribe request: ``what`` is ``PROC_EVENT_NONE``.

    ``ack`` is ``cn_msg.ack``, the request's ack + 1. The kernel multicasts
    every subscriber's reply to every listener, so match on it. ``err`` is 0 or
    a positive errno. Before Linux 6.6 the reply bypassed the per-CPU counter:
    ``cpu`` is 0xffffffff and ``seq`` echoes the request.
    """

    __slots__ = ()
    event: ClassVar[str] = "ack"
    what: ClassVar[int] = PROC_EVENT_NONE


class _Unknown(NamedTuple):
    seq: int
    cpu: int
    timestamp_ns: int
    what: int
    data: bytes


class UnknownEvent(_Value, _Unknown):
    """A ``what`` this library does not know; ``data`` is the raw ``event_data``."""

    __slots__ = ()
    event: ClassVar[str] = "unknown"

    def to_dict(self) -> dict[str, object]:
        return {
            "event": self.event,
            "seq": self.seq,
            "cpu": self.cpu,
            "timestamp_ns": self.timestamp_ns,
            "what": self.what,
            "data": self.data.hex(),
        }


class _NetlinkErrorMessage(NamedTuple):
    seq: int  # nlmsghdr.nlmsg_seq
    error: int


class NetlinkErrorMessage(_Value, _NetlinkErrorMessage):
    """An ``NLMSG_ERROR`` message: ``error`` is 0 (an ACK) or a negative errno."""

    __slots__ = ()
    event: ClassVar[str] = "netlink-error"


class _Overrun(NamedTuple):
    seq: int  # nlmsghdr.nlmsg_seq


class Overrun(_Value, _Overrun):
    """An ``NLMSG_OVERRUN`` message (defined by netlink.h; the kernel does not send it today)."""

    __slots__ = ()
    event: ClassVar[str] = "overrun"


ProcessEvent: TypeAlias = (
    ForkEvent | ExecEvent | UidEvent | GidEvent | SidEvent | PtraceEvent | CommEvent | CoredumpEvent | ExitEvent
)
Event: TypeAlias = ProcessEvent | AckEvent | UnknownEvent | NetlinkErrorMessage | Overrun

#: The process event classes by CLI name, in the kernel's bit order.
PROCESS_EVENTS: Final[dict[str, type[ProcessEvent]]] = {
    cls.event: cls
    for cls in (ForkEvent, ExecEvent, UidEvent, GidEvent, SidEvent, PtraceEvent, CommEvent, CoredumpEvent, ExitEvent)
}


def event_matches(event: Event, kinds: EventKind | int) -> bool:
    """Whether the kernel's per-socket filter (``cn_filter()``, Linux 6.6) lets
    ``event`` through to a socket subscribed with ``event_type = kinds``.

    ``PROC_EVENT_NONZERO_EXIT`` passes an exit with a non-zero ``exit_code``;
    ``PROC_EVENT_EXIT`` passes every exit. Only the full mask passes the
    subscribe replies (``what == PROC_EVENT_NONE``). Netlink control messages
    always pass.
    """
    mask = valid_event(int(kinds)) or PROC_EVENT_ALL
    if mask == PROC_EVENT_ALL or isinstance(event, NetlinkErrorMessage | Overrun):
        return True
    what = event.what
    if mask & PROC_EVENT_NONZERO_EXIT and what == PROC_EVENT_EXIT and isinstance(event, ExitEvent) and event.exit_code:
        return True
    return bool(mask & what)


# --- Layout ----------------------------------------------------------------
#
# Offsets within one netlink message, from the layout classes. The kernel
# builds the proc_event 8-aligned in a stack buffer, but in the datagram it
# follows the 16-byte nlmsghdr and the 20-byte cn_msg, so it sits at offset 36:
# 4-aligned only. struct.unpack_from with "=" (standard sizes, no alignment)
# reads it where it is.

_CN: Final = NLMSG_HDRLEN  # the cn_msg: nlmsg_data()
_PE: Final = _CN + ctypes.sizeof(cn_msg)  # the proc_event: cn_msg.data
_ED: Final = _PE + proc_event.event_data.offset  # its event_data union
_PE_HEADER: Final = proc_event.event_data.offset  # what, cpu, timestamp_ns
_NLMSGHDR_SIZE: Final = ctypes.sizeof(nlmsghdr)

_CType: TypeAlias = Any  # a ctypes scalar or array type


def _member(cls: type[ctypes.Structure | ctypes.Union], path: str) -> tuple[int, _CType]:
    """Offset and ctypes type of a (dotted) field of a layout class."""
    offset = 0
    ctype: Any = cls
    for name in path.split("."):
        offset += getattr(ctype, name).offset
        ctype = dict((f[0], f[1]) for f in ctype._fields_)[name]
    return offset, ctype


def _code(ctype: _CType) -> str:
    """The struct format code of a ctypes scalar or char array."""
    if issubclass(ctype, ctypes.Array):
        return f"{ctypes.sizeof(ctype)}s"
    size = ctypes.sizeof(ctype)
    signed = ctype(-1).value < 0
    return {(2, False): "H", (4, False): "I", (4, True): "i", (8, False): "Q"}[(size, signed)]


def _struct(start: int, fields: Iterable[tuple[int, _CType]]) -> struct.Struct:
    """A native-order, unaligned Struct that reads ``fields`` (absolute offsets,
    ascending) from ``start``, skipping the bytes in between."""
    fmt, at = "=", start
    for offset, ctype in fields:
        if offset < at:
            raise AssertionError(f"field at {offset:#x} overlaps the one before")
        fmt += f"{offset - at}x" if offset > at else ""
        fmt += _code(ctype)
        at = offset + ctypes.sizeof(ctype)
    return struct.Struct(fmt)


def _nl(field: str) -> tuple[int, _CType]:
    return _member(nlmsghdr, field)


def _cn(field: str) -> tuple[int, _CType]:
    offset, ctype = _member(cn_msg, field)
    return _CN + offset, ctype


def _pe(field: str) -> tuple[int, _CType]:
    offset, ctype = _member(proc_event, field)
    return _PE + offset, ctype


# nlmsg_len, nlmsg_type: every message has them.
_NL_HEAD: Final = _struct(0, [_nl("nlmsg_len"), _nl("nlmsg_type")])
# cn_msg.id.idx, .id.val, .len; then proc_event.what on its own.
_CN_HEAD: Final = _struct(0, [_cn("id.idx"), _cn("id.val"), _cn("len")])
_WHAT: Final = _struct(0, [_pe("what")])
# cn_msg.seq, proc_event.cpu, .timestamp_ns: the shared prefix of the kinds
# the parser does not know.
_COMMON: Final = _struct(0, [_cn("seq"), _pe("cpu"), _pe("timestamp_ns")])
_NLMSGERR_ERROR: Final = _struct(0, [_member(nlmsgerr, "error")])
_NLMSG_SEQ: Final = _struct(0, [_nl("nlmsg_seq")])
_NLMSGHDR: Final = _struct(0, [_nl(f) for f in ("nlmsg_len", "nlmsg_type", "nlmsg_flags", "nlmsg_seq", "nlmsg_pid")])
_CN_MSG: Final = _struct(0, [_member(cn_msg, f) for f in ("id.idx", "id.val", "seq", "ack", "len", "flags")])


def _span(first: tuple[int, _CType], last: tuple[int, _CType]) -> tuple[int, _CType]:
    """The bytes of the adjacent fields ``first`` through ``last`` as one
    unsigned integer: one value to compare instead of several."""
    size = last[0] + ctypes.sizeof(last[1]) - first[0]
    return first[0], {4: ctypes.c_uint32, 8: ctypes.c_uint64}[size]


# Decoded comm values by their 16 kernel bytes: a handful of names recur.
_COMMS: Final[dict[bytes, str]] = {}


def _decode_comm(raw: bytes) -> str:
    if len(_COMMS) >= 4096:
        _COMMS.clear()
    name = _COMMS[raw] = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return name


_KIND_NAMES: Final = {
    value: name
    for name, value in vars(cn_proc).items()
    if name.startswith("PROC_EVENT_") and name not in ("PROC_EVENT_ALL", "PROC_EVENT_HEADER_SIZE")
}


class _Kind:
    """How to read one kind: ``full``, a Struct that reads its class's fields,
    in their order (the datagram's), from the start of a message; ``short``,
    the same without the fields a kernel before 4.18 does not send."""

    __slots__ = ("cls", "comm", "full", "minimum", "missing", "name", "short")

    def __init__(
        self,
        cls: type[ProcessEvent | AckEvent],
        member: type[ctypes.Structure],
        prefix: str,
        paths: Sequence[str],
        *,
        optional: int = 0,
    ) -> None:
        head = [_cn("seq")]
        if cls is AckEvent:
            head.append(_cn("ack"))
        head += [_pe("cpu"), _pe("timestamp_ns")]
        body = [_pe(f"event_data.{prefix}.{path}") for path in paths]
        names: tuple[str, ...] = cls._fields
        # The class's fields are the kernel's, in the kernel's order.
        if [n for n in names[len(head) :]] != [path.rsplit(".", 1)[-1] for path in paths]:
            raise AssertionError(f"{cls.__name__} fields {names} do not follow {prefix} {paths}")
        self.cls = cls
        self.name = _KIND_NAMES[cls.what]  # PROC_EVENT_FORK, for messages
        self.full = _struct(0, head + body)
        # Fields added to a member later (exit and coredump parents, Linux
        # 4.18) are optional: an older kernel sends a shorter cn_msg.len.
        self.short = _struct(0, (head + body)[: len(head) + len(body) - optional])
        self.missing = (0,) * optional
        last = body[-1 - optional] if optional else None
        self.minimum = _PE_HEADER + (
            last[0] + ctypes.sizeof(last[1]) - _ED if last is not None else ctypes.sizeof(member)
        )
        self.comm = names[-1] == "comm"  # its last value is bytes to decode


_KINDS: Final[dict[int, _Kind]] = {
    PROC_EVENT_NONE: _Kind(AckEvent, proc_event__ack, "ack", ["err"]),
    PROC_EVENT_FORK: _Kind(
        ForkEvent, fork_proc_event, "fork", ["parent_pid", "parent_tgid", "child_pid", "child_tgid"]
    ),
    PROC_EVENT_EXEC: _Kind(ExecEvent, exec_proc_event, "exec", ["process_pid", "process_tgid"]),
    PROC_EVENT_UID: _Kind(UidEvent, id_proc_event, "id", ["process_pid", "process_tgid", "r.ruid", "e.euid"]),
    PROC_EVENT_GID: _Kind(GidEvent, id_proc_event, "id", ["process_pid", "process_tgid", "r.rgid", "e.egid"]),
    PROC_EVENT_SID: _Kind(SidEvent, sid_proc_event, "sid", ["process_pid", "process_tgid"]),
    PROC_EVENT_PTRACE: _Kind(
        PtraceEvent, ptrace_proc_event, "ptrace", ["process_pid", "process_tgid", "tracer_pid", "tracer_tgid"]
    ),
    PROC_EVENT_COMM: _Kind(CommEvent, comm_proc_event, "comm", ["process_pid", "process_tgid", "comm"]),
    PROC_EVENT_COREDUMP: _Kind(
        CoredumpEvent,
        coredump_proc_event,
        "coredump",
        ["process_pid", "process_tgid", "parent_pid", "parent_tgid"],
        optional=2,
    ),
    PROC_EVENT_EXIT: _Kind(
        ExitEvent,
        exit_proc_event,
        "exit",
        ["process_pid", "process_tgid", "exit_code", "exit_signal", "parent_pid", "parent_tgid"],
        optional=2,
    ),
}


# --- Parser ----------------------------------------------------------------

# A flat byte buffer: its len() is its size in bytes.
_Flat: TypeAlias = bytes | bytearray | memoryview

_new: Final = tuple.__new__  # an event from the tuple of its fields


#: The length of a datagram as the kernel sends it: one NLMSG_DONE message
#: whose cn_msg carries one struct proc_event.
KERNEL_EVENT_SIZE: Final = _PE + ctypes.sizeof(proc_event)

_Reader: TypeAlias = Callable[..., tuple[Any, ...]]  # a Struct's unpack_from


#: The kinds made of integers (not comm, not the reply): ``what`` to the
#: kind's unpack_from and class.
_INT_KINDS: Final[dict[int, tuple[_Reader, type[ProcessEvent]]]] = {
    what: (k.full.unpack_from, k.cls)  # type: ignore[misc]  # AckEvent is left out
    for what, k in _KINDS.items()
    if not k.comm and k.cls is not AckEvent
}

# The fast path reads a kernel event with two unpacks: a guard, then the
# kind's fields. The guard reads three integers: nlmsg_len/type/flags,
# cn_msg.id, and cn_msg.len/flags with proc_event.what (adjacent, so one
# value names both the shape and the kind); it is padded to a whole kernel
# event, so the same unpack checks that the buffer holds all of it.
_FAST_HEAD_STRUCT: Final = _struct(
    0,
    [
        _span(_nl("nlmsg_len"), _nl("nlmsg_flags")),
        _span(_cn("id.idx"), _cn("id.val")),
        _span(_cn("len"), _pe("what")),
    ],
)
_FAST_GUARD_STRUCT: Final = struct.Struct(f"{_FAST_HEAD_STRUCT.format}{KERNEL_EVENT_SIZE - _FAST_HEAD_STRUCT.size}x")
_FAST_GUARD: Final[_Reader] = _FAST_GUARD_STRUCT.unpack_from
# The same guard over a whole datagram: Struct.unpack takes exactly
# KERNEL_EVENT_SIZE bytes of any C-contiguous buffer, counted in bytes
# whatever the view's format or shape, so one call also checks the size.
_WHOLE_GUARD: Final[_Reader] = _FAST_GUARD_STRUCT.unpack


def _fast_table() -> tuple[int, int, dict[int, tuple[_Reader, type[ProcessEvent]]], int]:
    """What the guard reads from a kernel event: its first two values, the
    third by kind (to the kind's reader and class, for the kinds made of
    integers), and the third of a comm event."""
    tail: dict[int, int] = {}
    for what in (*_INT_KINDS, PROC_EVENT_COMM):
        reference = bytearray(KERNEL_EVENT_SIZE)
        _WHAT.pack_into(reference, 0, what)  # first: its pad bytes zero the headers
        _NLMSGHDR.pack_into(reference, 0, KERNEL_EVENT_SIZE, NLMSG_DONE, 0, 0, 0)
        _CN_MSG.pack_into(reference, _CN, CN_IDX_PROC, CN_VAL_PROC, 0, 0, ctypes.sizeof(proc_event), 0)
        head, ident, tail[what] = _FAST_GUARD(reference, 0)
    comm = tail.pop(PROC_EVENT_COMM)
    return head, ident, {tail[what]: kind for what, kind in _INT_KINDS.items()}, comm


_FAST_HEAD, _FAST_IDENT, _FAST_KINDS, _FAST_COMM_TAIL = _fast_table()
_FAST_KIND: Final = _FAST_KINDS.get
_COMM_FIELDS: Final[_Reader] = _KINDS[PROC_EVENT_COMM].full.unpack_from


def read_kernel_event(buffer: Buffer, offset: int) -> ProcessEvent | None:
    """The process event in the ``KERNEL_EVENT_SIZE`` bytes at ``offset`` of a
    flat byte buffer, when they are one whole message as the kernel sends it:
    ``NLMSG_DONE``, no flags, ``CN_IDX_PROC:CN_VAL_PROC``, ``cn_msg.len`` =
    ``sizeof(struct proc_event)``, no ``cn_msg.flags``, and a process event
    kind (not the subscribe reply).

    ``None`` otherwise (fewer bytes, another shape, a reply or an unknown
    kind): the caller takes the general path, ``parse_events``, which reads
    the same bytes to the same event or explains why not. Whether the
    datagram ends after these bytes is the caller's to check.
    """
    try:
        head, ident, tail = _FAST_GUARD(buffer, offset)
    except struct.error:  # fewer than KERNEL_EVENT_SIZE bytes
        return None
    if head != _FAST_HEAD or ident != _FAST_IDENT:
        return None
    kind = _FAST_KIND(tail)
    if kind is not None:
        read, cls = kind
        return _new(cls, read(buffer, offset))
    if tail == _FAST_COMM_TAIL:
        seq, cpu, ts, pid, tgid, raw = _COMM_FIELDS(buffer, offset)
        return _new(CommEvent, (seq, cpu, ts, pid, tgid, _COMMS.get(raw) or _decode_comm(raw)))
    return None


def _flat(data: Buffer) -> _Flat:
    """``data`` as a flat byte buffer: what parsing reads is its bytes, in
    order, whatever the shape or format of the view."""
    if type(data) is bytes or type(data) is bytearray:
        return data
    try:
        view = memoryview(data)
    except ValueError as e:  # a closed mmap, a released memoryview
        raise ParseError(f"the buffer cannot be read: {e}") from None
    if view.c_contiguous:
        return view if view.ndim == 1 and view.format == "B" else view.cast("B")
    return view.tobytes()


def parse_events(data: Buffer) -> list[Event]:
    """Every message of one datagram, as event values, in order.

    ``data`` is any buffer; it parses as its bytes do. ``NLMSG_NOOP``
    messages are skipped. Raises ``ParseError`` for malformed input: a length
    past the buffer, a ``cn_msg.len`` that does not fit its message or its
    kind, a connector id other than ``CN_IDX_PROC:CN_VAL_PROC``, a message
    type that is neither ``NLMSG_DONE`` nor a netlink control type, a buffer
    that cannot be read (a closed mmap).

    Events from kernels before 4.18 lack the ``parent_*`` fields of exit
    and coredump: they read as 0, as the kernel itself writes them when
    the parent is gone.
    """
    # What the kernel sends (since Linux 3.2): one message per datagram,
    # cn_msg.len = sizeof(struct proc_event). This is read_kernel_event at
    # offset 0 with its guard and tables, written out here: a call, a type
    # check and a len() per datagram cost 14 % more instructions. Anything
    # else takes the general path, over the buffer's bytes.
    try:
        head, ident, tail = _WHOLE_GUARD(data)
    except (struct.error, BufferError, ValueError, TypeError):
        # Another size, a view that is not C-contiguous, a closed mmap or
        # released view, not a buffer: _flat copies, refuses or raises.
        return _parse_all(_flat(data))
    if head == _FAST_HEAD and ident == _FAST_IDENT:
        kind = _FAST_KIND(tail)
        if kind is not None:
            read, cls = kind
            return [_new(cls, read(data))]
        if tail == _FAST_COMM_TAIL:
            seq, cpu, ts, pid, tgid, raw = _COMM_FIELDS(data)
            return [_new(CommEvent, (seq, cpu, ts, pid, tgid, _COMMS.get(raw) or _decode_comm(raw)))]
    return _parse_all(_flat(data))


def _parse_all(data: _Flat) -> list[Event]:
    n = len(data)  # a flat byte buffer: its length is its size in bytes
    out: list[Event] = []
    off = 0
    while off < n:
        if n - off < _NLMSGHDR_SIZE:
            raise ParseError(f"{n - off:#x} trailing bytes are shorter than nlmsghdr {_NLMSGHDR_SIZE:#x}", off)
        nl_len, nl_type = _NL_HEAD.unpack_from(data, off)
        if nl_len < _NLMSGHDR_SIZE:
            raise ParseError(f"nlmsg_len {nl_len:#x} is shorter than nlmsghdr {_NLMSGHDR_SIZE:#x}", off)
        if nl_len > n - off:
            raise ParseError(f"nlmsg_len {nl_len:#x} runs past the datagram end {n - off:#x}", off)
        if nl_type == NLMSG_DONE:
            out.append(_parse_cn_msg(data, off, nl_len))
        elif nl_type == NLMSG_NOOP:
            pass
        elif nl_type == NLMSG_ERROR:
            need = nlmsg_length(ctypes.sizeof(nlmsgerr))
            if nl_len < need:
                raise ParseError(f"nlmsg_len {nl_len:#x} is too short for nlmsgerr (needs {need:#x})", off)
            (error,) = _NLMSGERR_ERROR.unpack_from(data, off + NLMSG_HDRLEN)
            (seq,) = _NLMSG_SEQ.unpack_from(data, off)
            out.append(NetlinkErrorMessage(seq=seq, error=error))
        elif nl_type == NLMSG_OVERRUN:
            (seq,) = _NLMSG_SEQ.unpack_from(data, off)
            out.append(Overrun(seq=seq))
        else:
            raise ParseError(f"nlmsg_type {nl_type:#x} is not NLMSG_DONE or a netlink control type", off)
        # The last message may lack its alignment padding.
        off += nlmsg_align(nl_len)
    return out


def _parse_cn_msg(data: _Flat, off: int, nl_len: int) -> Event:
    if nl_len < _PE:
        raise ParseError(f"nlmsg_len {nl_len:#x} is too short for cn_msg (needs {_PE:#x})", off)
    idx, val, cn_len = _CN_HEAD.unpack_from(data, off)
    if idx != CN_IDX_PROC or val != CN_VAL_PROC:
        raise ParseError(f"cn_msg.id {idx:#x}:{val:#x} is not CN_IDX_PROC:CN_VAL_PROC", off)
    if _PE + cn_len > nl_len:
        raise ParseError(f"cn_msg.len {cn_len:#x} runs past the message end {nl_len:#x}", off)
    if cn_len < _PE_HEADER:
        raise ParseError(f"cn_msg.len {cn_len:#x} is shorter than the proc_event header {_PE_HEADER:#x}", off)
    (what,) = _WHAT.unpack_from(data, off)
    kind = _KINDS.get(what)
    if kind is None:
        seq, cpu, timestamp_ns = _COMMON.unpack_from(data, off)
        raw = bytes(data[off + _ED : off + _PE + cn_len])
        return UnknownEvent(seq=seq, cpu=cpu, timestamp_ns=timestamp_ns, what=what, data=raw)
    if cn_len < kind.minimum:
        raise ParseError(f"cn_msg.len {cn_len:#x} is too short for {kind.name} (needs {kind.minimum:#x})", off)
    if kind.full.size <= _PE + cn_len:
        values: tuple[Any, ...] = kind.full.unpack_from(data, off)
    else:
        values = kind.short.unpack_from(data, off) + kind.missing
    if kind.comm:
        raw = values[-1]
        values = (*values[:-1], _COMMS.get(raw) or _decode_comm(raw))
    event: Event = _new(kind.cls, values)
    return event


# --- Encoders --------------------------------------------------------------
#
# A subscribe request is an NLMSG_DONE message carrying a cn_msg for
# CN_IDX_PROC:CN_VAL_PROC whose payload is either the bare u32 op, or (Linux
# 6.6) a struct proc_input {mcast_op, event_type}. cn_proc_mcast_ctl() tells
# them apart by cn_msg.len alone, and ignores any other length: a kernel
# before 6.6 silently ignores a proc_input.

_OP: Final = struct.Struct("=I")
_PROC_INPUT: Final = _struct(0, [_member(proc_input, "mcast_op"), _member(proc_input, "event_type")])
_PROC_EVENT_HEAD: Final = _struct(0, [_member(proc_event, f) for f in ("what", "cpu", "timestamp_ns")])


def _connector_message(payload: bytes, *, seq: int, ack: int, port_id: int = 0) -> bytes:
    head = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, ack, len(payload), 0)
    body = head + payload
    return _NLMSGHDR.pack(nlmsg_length(len(body)), NLMSG_DONE, 0, seq, port_id) + body


def encode_mcast(
    op: int, events: EventKind | int | None = None, *, seq: int = 0, ack: int = 0, port_id: int = 0
) -> bytes:
    """A subscribe request: ``op`` is ``PROC_CN_MCAST_LISTEN`` or ``_IGNORE``.

    Without ``events`` the payload is the bare u32 op (every kernel); with it,
    a ``struct proc_input`` whose ``event_type`` is the mask (Linux 6.6). The
    kernel reads neither ``nlmsg_pid`` nor ``nlmsg_seq``; ``port_id`` fills the
    former by netlink custom (the sender's port id), ``seq`` both sequence
    fields. The reply's ``cn_msg.ack`` is ``ack + 1``.
    """
    payload = _OP.pack(op) if events is None else _PROC_INPUT.pack(op, int(events))
    return _connector_message(payload, seq=seq, ack=ack, port_id=port_id)


def encode_listen(events: EventKind | int | None = None, *, seq: int = 0, ack: int = 0, port_id: int = 0) -> bytes:
    """``PROC_CN_MCAST_LISTEN``: the bare op, or a ``proc_input`` filter when ``events`` is given."""
    return encode_mcast(PROC_CN_MCAST_LISTEN, events, seq=seq, ack=ack, port_id=port_id)


def encode_ignore(*, seq: int = 0, ack: int = 0, port_id: int = 0, filtered: bool = False) -> bytes:
    """``PROC_CN_MCAST_IGNORE``: the bare op (every kernel), or a ``proc_input``
    (Linux 6.6 only; the kernel clears the filter either way)."""
    return encode_mcast(PROC_CN_MCAST_IGNORE, PROC_EVENT_ALL if filtered else None, seq=seq, ack=ack, port_id=port_id)


@dataclass(frozen=True, slots=True)
class McastRequest:
    """A decoded subscribe request, as ``cn_proc_mcast_ctl()`` reads it."""

    op: int  # PROC_CN_MCAST_LISTEN or PROC_CN_MCAST_IGNORE
    events: int | None  # proc_input.event_type, None for a bare op
    seq: int  # cn_msg.seq
    ack: int  # cn_msg.ack
    port_id: int  # nlmsghdr.nlmsg_pid


def parse_request(data: Buffer) -> McastRequest:
    """The inverse of ``encode_mcast``, for tests and fake kernels."""
    data = bytes(data)
    if len(data) < _PE:
        raise ParseError(f"request length {len(data):#x} is shorter than nlmsghdr and cn_msg {_PE:#x}")
    nl_len, nl_type, _flags, _nl_seq, port_id = _NLMSGHDR.unpack_from(data)
    if nl_len > len(data):
        raise ParseError(f"nlmsg_len {nl_len:#x} runs past the datagram end {len(data):#x}")
    if nl_type != NLMSG_DONE:
        raise ParseError(f"nlmsg_type {nl_type:#x} is not NLMSG_DONE")
    idx, val, seq, ack, cn_len, _cn_flags = _CN_MSG.unpack_from(data, _CN)
    if idx != CN_IDX_PROC or val != CN_VAL_PROC:
        raise ParseError(f"cn_msg.id {idx:#x}:{val:#x} is not CN_IDX_PROC:CN_VAL_PROC")
    if _PE + cn_len > nl_len:
        raise ParseError(f"cn_msg.len {cn_len:#x} runs past the message end {nl_len:#x}")
    if cn_len == _PROC_INPUT.size:
        op, events = _PROC_INPUT.unpack_from(data, _PE)
        return McastRequest(op=op, events=events, seq=seq, ack=ack, port_id=port_id)
    if cn_len == _OP.size:
        (op,) = _OP.unpack_from(data, _PE)
        return McastRequest(op=op, events=None, seq=seq, ack=ack, port_id=port_id)
    raise ParseError(f"cn_msg.len {cn_len:#x} is neither a u32 op nor a proc_input {_PROC_INPUT.size:#x}")


def encode_event(event: ProcessEvent | AckEvent | UnknownEvent) -> bytes:
    """The datagram the kernel would send for ``event`` (``cn_msg.len`` =
    ``sizeof(struct proc_event)``, or the header plus ``data`` for an unknown
    kind). ``parse_events(encode_event(e)) == [e]``: for tests and replays."""
    if isinstance(event, UnknownEvent):
        event_data, ack = event.data, 0
    else:
        kind = _KINDS[event.what]
        # Pack the kind's Struct over a zeroed message, then cut its
        # event_data out: the headers are written below.
        message = bytearray(_PE + ctypes.sizeof(proc_event))
        kind.full.pack_into(message, 0, *map(_encode_value, event))
        event_data = bytes(message[_ED:])
        ack = event.ack if isinstance(event, AckEvent) else 0
    payload = _PROC_EVENT_HEAD.pack(event.what, event.cpu, event.timestamp_ns) + event_data
    return _connector_message(payload, seq=event.seq, ack=ack)


def _encode_value(value: Any) -> Any:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


__all__ = [
    "Buffer",
    "KstructsError",
    "ParseError",
    "ForkEvent",
    "ExecEvent",
    "UidEvent",
    "GidEvent",
    "SidEvent",
    "PtraceEvent",
    "CommEvent",
    "CoredumpEvent",
    "ExitEvent",
    "AckEvent",
    "UnknownEvent",
    "NetlinkErrorMessage",
    "Overrun",
    "ProcessEvent",
    "Event",
    "PROCESS_EVENTS",
    "event_matches",
    "parse_events",
    "KERNEL_EVENT_SIZE",
    "encode_mcast",
    "encode_listen",
    "encode_ignore",
    "McastRequest",
    "parse_request",
    "encode_event",
]

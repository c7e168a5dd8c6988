"""The state between datagrams: a process-events stream with no socket and no clock.

``EventStream`` is fed what a socket returned -- the sender's port id, whether
the datagram was truncated, its bytes -- and told, as plain numbers, of what
the socket reported besides: an ``ENOBUFS``, an empty queue, the kernel's
count of datagrams it dropped for the socket (``Drops`` in
``/proc/net/netlink``). It appends events and ``Loss`` values to a list the
caller gives, and keeps the statistics. ``kstructs.listener`` feeds one from a
netlink socket; a test or another event loop can feed one from anywhere.

What it does (``keepalived/core/track_process.c`` is the model):

- It accepts datagrams only from the kernel (sender port id 0): any process
  with ``CAP_NET_ADMIN`` may send to a netlink socket's port id and forge
  events. Such datagrams are counted in ``stats.foreign``; truncated or
  malformed ones from the kernel in ``stats.malformed``.
- It recognises the kernel's reply to the subscription by its ``ack``
  (the request's nonce + 1), keeping a success over an error.
- Losses are values. After an ``ENOBUFS``, once the queue is empty (or at
  the next ``ENOBUFS``), one ``Loss("enobufs")`` counts the datagrams the
  kernel dropped. While every event reaches the stream (no kernel-side
  filter), each CPU's ``cn_msg.seq`` is checked too, and a gap that no drop
  explains is a ``Loss("seq-gap")``.
- With ``events``, it filters in user space (``event_matches``), so a kernel
  without ``struct proc_input`` (before Linux 6.6) gives the same stream.
- ``pause(now)`` is how long a reader may wait before reading again.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableSequence
from dataclasses import dataclass
from typing import ClassVar, Final

from kstructs._typing import Buffer
from kstructs.cn_proc import PROC_EVENT_ALL, valid_event
from kstructs.events import (
    KERNEL_EVENT_SIZE,
    PROCESS_EVENTS,
    AckEvent,
    Event,
    NetlinkErrorMessage,
    Overrun,
    ParseError,
    event_matches,
    parse_events,
    read_kernel_event,
)

_U32: Final = 0xFFFFFFFF
_NO_CPU: Final = 0xFFFFFFFF  # proc_event.cpu of a reply before Linux 6.6
# MSG_TRUNC (<bits/socket.h>): the datagram was longer than its buffer.
MSG_TRUNC: Final = 0x20
# What one event costs the receive queue (its skb's truesize), rounded up.
QUEUED_EVENT_BYTES: Final = 1024
#: The longest pause by default (seconds): the most a reader delays an event.
DEFAULT_LINGER: Final = 0.004


#: A buffer of bytes, one dimension, that slices to its bytes.
FlatBuffer = bytes | bytearray | memoryview

#: ``(msg_flags, length), (sender port id,), offset``: where one received
#: datagram is in a buffer, as ``_recvmmsg.Batch.frames()`` tells it.
Frame = tuple[tuple[int, int], tuple[int], int]


# --- Values ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loss:
    """Events the kernel sent and this stream did not receive.

    ``reason`` is ``"enobufs"`` (the receive queue overflowed; ``count`` is the
    number of datagrams the kernel dropped for this socket, or, without the
    kernel's count, the sequence gaps seen, and at least 1) or ``"seq-gap"`` (a
    gap in ``cpu``'s ``cn_msg.seq`` that no overflow explains, such as an skb
    the kernel failed to allocate).
    """

    event: ClassVar[str] = "lost"
    count: int
    reason: str
    cpu: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {"event": self.event, "count": self.count, "reason": self.reason, "cpu": self.cpu}


@dataclass(slots=True)
class ListenerStats:
    received: int = 0  # datagrams accepted from the kernel
    events: int = 0  # values delivered (events and losses)
    rejected: int = 0  # foreign + malformed
    foreign: int = 0  # datagrams from a sender other than the kernel
    malformed: int = 0  # datagrams from the kernel that did not parse
    filtered: int = 0  # events dropped by the user-space filter
    lost: int = 0  # the sum of Loss.count, and drops the kernel counted that no Loss reports yet
    enobufs: int = 0  # ENOBUFS reports
    rcvbuf: int = 0  # SO_RCVBUF, as the kernel counts it (twice the request)
    kernel_filter: bool = False  # the kernel filters by proc_input (Linux 6.6)


Item = Event | Loss


# --- The stream --------------------------------------------------------------


class EventStream:
    """Datagrams in, events and ``Loss`` values out; see the module docstring.

    ``events``: the ``EventKind`` bits to keep (``None``: everything, replies
    of other subscribers included). ``linger``: the longest ``pause()``.
    """

    def __init__(self, events: int | None = None, *, linger: float = 0.0) -> None:
        self.linger = linger
        mask = None if events is None else (valid_event(int(events)) or PROC_EVENT_ALL)
        self.events: int | None = None if mask == PROC_EVENT_ALL else mask
        self.stats = ListenerStats()
        #: The reply to the subscription: the first success, else the first error.
        self.ack: AckEvent | None = None
        #: Offset of the last datagram ``receive_frames()`` took (or was
        #: taking when an exception stopped it).
        self.offset = 0
        self._want_ack: int | None = None
        # User-space filter: the classes that always pass; the rest (a non-zero
        # exit under PROC_EVENT_NONZERO_EXIT, an unknown kind) ask event_matches().
        # Control messages pass before the filter.
        self._pass = frozenset(cls for cls in PROCESS_EVENTS.values() if self.events is None or self.events & cls.what)
        # Loss accounting.
        self._track = True  # every event reaches us: per-CPU seq gaps mean loss
        self._last_seq: dict[int, int] = {}
        self._overflow = False  # ENOBUFS seen, Loss not yet reported
        self._pending_gaps = 0  # gaps seen during an overflow
        self._gap_credit = 0  # drops reported whose gaps have not shown yet
        self._drops_reported = 0  # the kernel's drop count, as far as a Loss reported it
        self._unreported = 0  # drops in stats.lost that no Loss reports yet
        # Pacing.
        self._room = 0.0  # events a quarter of the receive buffer holds
        self._since_pause = 0  # datagrams since the last pause()
        self._backlog = False  # the last read left datagrams queued
        self._last_pause = 0.0

    # --- Set-up ----------------------------------------------------------

    @property
    def linger(self) -> float:
        return self._linger

    @linger.setter
    def linger(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"linger must be a non-negative number of seconds: {value!r}")
        self._linger = value

    def set_rcvbuf(self, rcvbuf: int) -> None:
        """The receive buffer's size as the kernel counts it (``SO_RCVBUF``)."""
        self.stats.rcvbuf = rcvbuf
        self._room = rcvbuf / (4 * QUEUED_EVENT_BYTES)

    def expect_ack(self, nonce: int | None) -> None:
        """Look for the reply to a request whose ``cn_msg.ack`` is ``nonce``
        (``None``: stop looking); ``ack`` starts over."""
        self._want_ack = None if nonce is None else (nonce + 1) & _U32
        self.ack = None

    def kernel_filters(self) -> None:
        """The kernel filters by ``proc_input`` from now on: filtered events
        consume the per-CPU counters too, so gaps no longer mean loss."""
        self.stats.kernel_filter = True
        self._track = False
        self._last_seq.clear()

    @property
    def backlog(self) -> bool:
        """The last datagrams came from a queue not yet found empty (``drained()``)."""
        return self._backlog

    @property
    def overflowing(self) -> bool:
        """An ``ENOBUFS`` awaits its ``Loss``: the next ``drained()`` or
        ``enobufs()`` wants the kernel's drop count."""
        return self._overflow

    # --- Datagrams -------------------------------------------------------

    def receive(self, sender: int, truncated: bool, data: Buffer, out: MutableSequence[Item]) -> None:
        """Take one datagram (any buffer: its bytes) into ``out``."""
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1 or not view.c_contiguous:
            view = memoryview(view.tobytes())
        self.receive_frames(view, (((MSG_TRUNC if truncated else 0, view.nbytes), (sender,), 0),), out)

    def receive_frames(self, buffer: FlatBuffer, frames: Iterable[Frame], out: MutableSequence[Item]) -> None:
        """Take the datagrams ``frames`` locate in the flat byte ``buffer`` into ``out``, in
        order. Datagrams shaped as the kernel sends them are read in place;
        ``offset`` tells how far it got if an exception stops it."""
        # The user-space filter stays on under a kernel filter: events queued
        # before the kernel narrowed it still pass through here.
        track, last_seq, passing, want_ack, append = self._track, self._last_seq, self._pass, self._want_ack, out.append
        kinds = self.events or 0  # 0: everything passes event_matches()
        size, read, parse, matches, trunc = KERNEL_EVENT_SIZE, read_kernel_event, parse_events, event_matches, MSG_TRUNC
        error_cls, overrun_cls, ack_cls = NetlinkErrorMessage, Overrun, AckEvent
        stats, start = self.stats, len(out)
        received = foreign = malformed = filtered = 0
        offset = self.offset
        self._backlog = True  # until drained()
        try:
            for (msg_flags, length), (sender,), offset in frames:
                if sender:  # not the kernel
                    foreign += 1
                    continue
                received += 1
                ev: Event | None = read(buffer, offset) if length == size and not msg_flags & trunc else None
                rest: list[Event] | None = None
                if ev is None:
                    if msg_flags & trunc:  # longer than the largest datagram the connector sends
                        malformed += 1
                        continue
                    try:
                        rest = parse(buffer[offset : offset + length])
                    except ParseError:
                        malformed += 1
                        continue
                    if not rest:
                        continue
                    rest.reverse()
                    ev = rest.pop()
                # Each event of the datagram in turn: one, but for the rare
                # datagram of several messages.
                while True:
                    cls = type(ev)
                    if cls is error_cls or cls is overrun_cls:
                        append(ev)
                    else:
                        if track:
                            seq, cpu = ev.seq, ev.cpu  # type: ignore[union-attr]
                            if seq - last_seq.get(cpu, seq - 1) != 1:
                                self._check_seq(out, cpu, seq)
                            last_seq[cpu] = seq
                        if cls is ack_cls and ev.ack == want_ack:  # type: ignore[union-attr]
                            if self.ack is None or (self.ack.err and not ev.err):  # type: ignore[union-attr]
                                self.ack = ev  # type: ignore[assignment]
                        elif cls not in passing and not matches(ev, kinds):
                            filtered += 1
                        else:
                            append(ev)
                    if not rest:
                        break
                    ev = rest.pop()
        finally:
            self.offset = offset
            self._since_pause += received + foreign
            stats.received += received
            stats.foreign += foreign
            stats.malformed += malformed
            stats.rejected += foreign + malformed
            stats.filtered += filtered
            stats.events += len(out) - start

    def receive_kernel(self, buffer: FlatBuffer, offsets: range, out: MutableSequence[Item]) -> None:
        """``receive_frames`` of datagrams known to be ``KERNEL_EVENT_SIZE``
        bytes long, whole and from the kernel, at ``offsets`` of ``buffer``:
        the fast path for what the kernel sends (one call per batch)."""
        track, last_seq, passing, kinds = self._track, self._last_seq, self._pass, self.events or 0
        read, matches, append, check_seq = read_kernel_event, event_matches, out.append, self._check_seq
        start, first, step = len(out), offsets.start, offsets.step
        offset, slow, filtered = first - step, 0, 0
        self._backlog = True  # until drained()
        try:
            for offset in offsets:
                ev = read(buffer, offset)
                if ev is None:  # a reply, an unknown kind, a malformed one: the general path
                    slow += 1
                    mark = len(out)
                    self.receive_frames(buffer, (((0, KERNEL_EVENT_SIZE), (0,), offset),), out)
                    start += len(out) - mark  # counted there
                    continue
                if track:
                    seq, cpu = ev.seq, ev.cpu
                    if seq - last_seq.get(cpu, seq - 1) != 1:
                        check_seq(out, cpu, seq)
                    last_seq[cpu] = seq
                if type(ev) in passing or matches(ev, kinds):
                    append(ev)
                else:
                    filtered += 1
        finally:
            done = (offset - first) // step + 1
            if done:
                self.offset = offset
            fast = done - slow
            self._since_pause += fast
            stats = self.stats
            stats.received += fast
            stats.filtered += filtered
            stats.events += len(out) - start

    # --- What the socket says besides ------------------------------------

    def enobufs(self, out: MutableSequence[Item], drops: int | None = None) -> None:
        """The socket reported ``ENOBUFS``. ``drops``: the kernel's drop
        count, wanted when ``overflowing`` (``None``: not known)."""
        if self._overflow:
            # A new overflow: the kernel cleared the last one's mark when we
            # emptied the queue, so its drops are all counted.
            self._report_overflow(out, drops)
        self.stats.enobufs += 1
        self._overflow = True

    def drained(self, out: MutableSequence[Item], drops: int | None = None) -> None:
        """The receive queue is empty. ``drops`` as for ``enobufs()``."""
        self._backlog = False
        if self._overflow:
            # The kernel has cleared its congestion mark: this overflow's
            # drops are all counted.
            self._report_overflow(out, drops)

    def kernel_drops(self, drops: int) -> None:
        """The kernel's drop count for the socket now: ``stats.lost`` counts
        the drops no ``Loss`` reports yet (a later ``Loss`` takes them over)."""
        unreported = max(drops - self._drops_reported, 0)
        self.stats.lost += unreported - self._unreported
        self._unreported = unreported

    # --- Pacing ------------------------------------------------------------

    def pause(self, now: float) -> float:
        """How long to wait before the next read, after a read that returned
        events, ``now`` seconds on a monotonic clock: ``linger``; 0 when the
        read left datagrams queued; less when they come so fast that waiting
        ``linger`` would fill more than a quarter of the receive buffer (the
        rate: the datagrams since the last call, over the time since then);
        0 rather than under 1 ms."""
        elapsed, self._last_pause = now - self._last_pause, now
        count, self._since_pause = self._since_pause, 0
        if self._backlog or not self._linger:
            return 0.0
        pause = min(self._linger, self._room * elapsed / max(count, 1))
        # poll() and asyncio wait whole milliseconds: a shorter pause would be longer.
        return pause if pause >= 0.001 else 0.0

    # --- Internals -------------------------------------------------------

    def _check_seq(self, out: MutableSequence[Item], cpu: int, seq: int) -> None:
        """``seq`` on ``cpu`` does not follow the last one: wrapped, or lost."""
        if cpu == _NO_CPU:  # a reply before Linux 6.6 echoes its request's seq
            return
        gap = (seq - self._last_seq[cpu] - 1) & _U32
        if gap and gap < 0x80000000:  # else it wrapped, or went back (a restart), not a loss
            # Drops already reported show up as gaps once their CPU sends again.
            absorbed = min(gap, self._gap_credit)
            self._gap_credit -= absorbed
            gap -= absorbed
            if gap and self._overflow:
                self._pending_gaps += gap  # the overflow's Loss will count it
            elif gap:
                out.append(Loss(gap, "seq-gap", cpu))
                self.stats.lost += gap

    def _report_overflow(self, out: MutableSequence[Item], drops: int | None) -> None:
        self._overflow = False
        if drops is not None:
            # Zero when an earlier report already took this overflow's drops.
            count = max(drops - self._drops_reported, 0)
            self._drops_reported = max(drops, self._drops_reported)
        else:
            count = max(self._pending_gaps, 1)  # ENOBUFS: at least one was dropped
        taken = min(count, self._unreported)  # already in stats.lost
        self._unreported -= taken
        self.stats.lost += count - taken
        start = len(out)
        if count:
            out.append(Loss(count, "enobufs"))
        if self._track:
            # Gaps already seen are part of the drops; the rest will show on
            # CPUs that have been quiet since.
            excess = self._pending_gaps - count
            if excess > 0:
                self.stats.lost += excess
                out.append(Loss(excess, "seq-gap"))
            else:
                self._gap_credit += -excess
        self._pending_gaps = 0
        self.stats.events += len(out) - start


__all__ = ["DEFAULT_LINGER", "EventStream", "Frame", "ListenerStats", "Loss", "Item"]

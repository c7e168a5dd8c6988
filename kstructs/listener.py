"""A process-events listener: a netlink socket, ``recvmmsg()``, then the parser.

``Listener`` binds the ``CN_IDX_PROC`` group of ``NETLINK_CONNECTOR``,
subscribes, and confirms the subscription by the kernel's reply. Then it
yields events, blocking (``for ev in listener``), non-blocking
(``fileno()`` + ``read()``) or under asyncio (``async for``).

What it adds to the bytes (``keepalived/core/track_process.c`` is the
model):

- It accepts datagrams only from the kernel (sender port id 0). Any process
  with ``CAP_NET_ADMIN`` may send to a netlink socket's port id and forge
  events; such datagrams are dropped and counted in ``stats.foreign`` and
  ``stats.rejected``.
- Losses are values, not exceptions. When the receive queue overflows the
  kernel drops datagrams and reports ``ENOBUFS`` once; the listener keeps
  reading and, once it has drained the queue, yields one ``Loss`` counting
  the datagrams dropped (the socket's ``Drops`` in ``/proc/net/netlink``).
  When it receives every event (no kernel-side filter) it also checks each
  CPU's ``cn_msg.seq`` and reports gaps that no ``ENOBUFS`` explains.
- With ``events``, it asks the kernel to filter (``struct proc_input``,
  Linux 6.6) and filters in user space as well, so older kernels give the
  same stream.
- ``close()`` sends ``PROC_CN_MCAST_IGNORE`` exactly once: the kernel keeps
  building events for as long as it counts a listener.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import platform
import select
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, MutableSequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Final, Self

from kstructs._recvmmsg import Batch
from kstructs.cn_proc import PROC_EVENT_ALL, EventKind, valid_event
from kstructs.connector import CN_IDX_PROC, CONNECTOR_MAX_MSG_SIZE, cn_msg
from kstructs.errors import NamespaceError, NoAckError, NoConnectorError, PrivilegeError
from kstructs.events import (
    _KERNEL,
    KERNEL_EVENT_SIZE,
    PROCESS_EVENTS,
    AckEvent,
    Buffer,
    Event,
    NetlinkErrorMessage,
    Overrun,
    ParseError,
    ProcessEvent,
    encode_ignore,
    encode_listen,
    event_matches,
    parse_events,
)
from kstructs.netlink import NETLINK_CONNECTOR, nlmsg_space

# include/uapi/asm-generic/socket.h; alpha, parisc and sparc number it 0x100b.
SO_RCVBUFFORCE: Final = getattr(
    socket, "SO_RCVBUFFORCE", 0x100B if platform.machine().startswith(("alpha", "parisc", "sparc")) else 33
)

#: Receive buffer asked for by default. One event costs the queue about 800
#: bytes (the skb's truesize), and the kernel doubles the request: 16 MiB of
#: queue holds some 20 000 events, over half a second of a fork storm.
DEFAULT_RCVBUF: Final = 8 << 20

#: How long the iterators wait for more events after handing out a batch
#: (seconds): the most it delays an event.
DEFAULT_LINGER: Final = 0.004

# What one event costs the receive queue, rounded up: to tell how many fit.
_QUEUED_EVENT_BYTES: Final = 1024

# Room for the largest datagram the connector sends: one message of
# CONNECTOR_MAX_MSG_SIZE bytes of payload. A longer one (from a foreign
# sender: rejected anyway) is truncated.
_RECV_SIZE: Final = nlmsg_space(ctypes.sizeof(cn_msg) + CONNECTOR_MAX_MSG_SIZE)
# Datagrams one recvmmsg() call takes at most.
_VLEN: Final = 64
# Datagrams read() takes in one call: bounds its latency and its list.
_BATCH: Final = 1024
# The kernel answers a subscribe request inside sendmsg() (cn_rx_skb() runs
# the callback synchronously), so the probe for proc_input support needs no
# long wait: its reply is queued, or there is none.
_PROBE_TIMEOUT: Final = 0.25
_U32: Final = 0xFFFFFFFF
# Plain ints: the socket module's are IntFlag members, whose & runs in Python.
_MSG_TRUNC: Final = int(socket.MSG_TRUNC)
_MSG_DONTWAIT: Final = int(socket.MSG_DONTWAIT)
_NO_CPU: Final = 0xFFFFFFFF  # proc_event.cpu of a reply before Linux 6.6


# --- Values ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loss:
    """Events the kernel sent and this listener did not receive.

    ``reason`` is ``"enobufs"`` (the receive queue overflowed; ``count`` is the
    number of datagrams the kernel dropped for this socket, or, without
    ``/proc``, the sequence gaps seen, and at least 1) or ``"seq-gap"`` (a gap
    in ``cpu``'s ``cn_msg.seq`` that no overflow explains, such as an skb the
    kernel failed to allocate).
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
    lost: int = 0  # the sum of Loss.count
    enobufs: int = 0  # ENOBUFS reports
    rcvbuf: int = 0  # SO_RCVBUF, as the kernel counts it (twice the request)
    kernel_filter: bool = False  # the kernel filters by proc_input (Linux 6.6)


Item = Event | Loss


def _new_batch() -> Batch | None:
    """recvmmsg() slots, or None where libc lacks recvmmsg()."""
    try:
        return Batch(_VLEN, _RECV_SIZE, KERNEL_EVENT_SIZE)
    except OSError:
        return None


class Listener:
    """Process events from the kernel; see the module docstring.

    ``events`` selects kinds (``EventKind`` bits, ``NONZERO_EXIT`` included);
    ``None`` means everything the kernel sends, subscribe replies of other
    listeners included. ``rcvbuf`` is the receive buffer to ask for
    (``SO_RCVBUFFORCE`` when privileged, else ``SO_RCVBUF`` capped by
    ``net.core.rmem_max``). ``ack_timeout`` bounds the wait for the kernel's
    reply to the subscription. ``linger``: after handing out what one read
    returned, the iterators wait that many seconds before reading again, so
    that under a storm one wakeup takes many events (a wakeup costs more CPU
    than an event). It delays an event by at most ``linger``; 0 reads again
    at once. Under a storm too fast for the receive buffer the wait is
    shorter (``pause``).
    """

    def __init__(
        self,
        events: EventKind | int | None = None,
        *,
        rcvbuf: int | None = None,
        ack_timeout: float = 1.0,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        mask = None if events is None else (valid_event(int(events)) or PROC_EVENT_ALL)
        self.events: int | None = None if mask == PROC_EVENT_ALL else mask
        self.rcvbuf = DEFAULT_RCVBUF if rcvbuf is None else rcvbuf
        self.ack_timeout = ack_timeout
        if not linger >= 0:
            raise ValueError(f"linger must be a non-negative number of seconds: {linger!r}")
        self.linger = linger
        self.stats = ListenerStats()
        self.port_id = 0  # the socket's netlink port id, once open
        self.ignore_sent = False
        self._sock: socket.socket | None = None
        self._listening = False  # a LISTEN went out: close() owes an IGNORE
        self._closed = False
        # Receive buffers: recvmmsg() slots, or one buffer for recvfrom().
        self._batch: Batch | None = None
        self._buf = bytearray()
        self._view = memoryview(self._buf)
        self._poller = select.poll()
        # For pause(): events a quarter of the receive buffer holds, what the
        # last read took and whether it left some queued, when pause() ran.
        self._room = 0.0
        self._since_pause = 0
        self._backlog = False
        self._last_pause = 0.0
        # A batch an exception interrupted: (datagrams in it, the next one).
        self._resume: tuple[int, int] | None = None
        # Received, not yet handed out: what a consumer that stopped
        # iterating left, and what arrived while waiting for a reply.
        self._pending: deque[Item] = deque()
        self._seq_request = 0
        self._want_ack: int | None = None
        self._ack: AckEvent | None = None
        # User-space filter: the classes that always pass; the rest (a non-zero
        # exit under PROC_EVENT_NONZERO_EXIT, an unknown kind) ask event_matches().
        self._pass: frozenset[type] | None = None
        if self.events is not None:
            self._pass = frozenset(cls for cls in PROCESS_EVENTS.values() if self.events & cls.what) | {
                NetlinkErrorMessage,
                Overrun,
            }
        # Loss accounting.
        self._track = True  # every event reaches us: per-CPU seq gaps mean loss
        self._last_seq: dict[int, int] = {}
        self._overflow = False  # ENOBUFS seen, Loss not yet reported
        self._pending_gaps = 0  # gaps seen during an overflow
        self._gap_credit = 0  # drops reported whose gaps have not shown yet
        self._drops_reported = 0
        self._inode = 0

    # --- Life cycle ----------------------------------------------------

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> Self:
        """Bind, subscribe and wait for the kernel's reply; idempotent."""
        if self._sock is not None:
            return self
        if self._closed:
            raise ValueError("listener is closed")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        except OSError as e:
            if e.errno == errno.EPROTONOSUPPORT:
                why = "no connector in this kernel (CONFIG_CONNECTOR), or an emulator (qemu-user) not passing it"
                raise NoConnectorError(e.errno, f"NETLINK_CONNECTOR is not supported: {why}") from e
            raise
        self._sock = sock
        try:
            self._set_rcvbuf(sock)
            try:
                sock.bind((0, CN_IDX_PROC))
            except PermissionError as e:
                raise PrivilegeError(
                    e.errno, "binding to the process events group needs CAP_NET_ADMIN on this kernel (before Linux 6.6)"
                ) from e
            self.port_id = sock.getsockname()[0]
            self._inode = os.fstat(sock.fileno()).st_ino
            self._poller.register(sock.fileno(), select.POLLIN)
            self._batch = _new_batch()
            if self._batch is None:
                self._single()
            self._subscribe()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Send ``PROC_CN_MCAST_IGNORE`` (once, if a LISTEN went out) and close the socket."""
        sock, self._sock = self._sock, None
        self._closed = True
        self._batch = None  # its buffers go with the last reference
        self._resume = None
        if sock is None:
            return
        try:
            if self._listening and not self.ignore_sent:
                self.ignore_sent = True
                try:
                    sock.send(encode_ignore(seq=self._next_seq(), ack=self.port_id, port_id=self.port_id))
                except OSError:
                    # The socket goes away regardless; the kernel then only
                    # builds events nobody reads until its counter resets.
                    self.ignore_sent = False
        finally:
            sock.close()

    def fileno(self) -> int:
        return self._socket().fileno()

    @property
    def closed(self) -> bool:
        return self._sock is None

    # --- Reading -------------------------------------------------------

    def read(self) -> list[Item]:
        """What has arrived, without blocking: ``[]`` when nothing has."""
        out = list(self._pending)
        self._pending.clear()
        try:
            self._drain(out, wait=False)
        except BaseException:
            self._pending.extendleft(reversed(out))  # nothing taken is lost
            raise
        return out

    def __iter__(self) -> Iterator[Item]:
        """Events as they come. Blocks while none are queued; after each
        batch, lingers (see ``linger``) so one wakeup takes many.
        Breaking out loses nothing: the next read or iteration goes on."""
        pending = self._pending
        while True:
            if not pending:
                self._drain(pending, wait=False)
            if not pending:
                self._drain(pending, wait=True)
                continue  # what woke us may all be filtered out
            pause = self.pause()
            while pending:
                yield pending.popleft()
            if pause:
                # Events are flowing: let more queue up before the next read.
                time.sleep(pause)

    def pause(self) -> float:
        """How long to wait before the next read, after a read that returned
        events: ``linger``; 0 when the read left datagrams queued; less when
        they come so fast that waiting ``linger`` would fill more than a
        quarter of the receive buffer (the rate: the datagrams read since the
        last call, over the time since then); 0 rather than under 1 ms."""
        now = time.monotonic()
        elapsed, self._last_pause = now - self._last_pause, now
        count, self._since_pause = self._since_pause, 0
        if self._backlog or not self.linger:
            return 0.0
        pause = min(self.linger, self._room * elapsed / max(count, 1))
        # poll() and asyncio wait whole milliseconds: a shorter pause would be longer.
        return pause if pause >= 0.001 else 0.0

    def __aiter__(self) -> AsyncIterator[Item]:
        return self.aiter()

    async def aiter(self) -> AsyncIterator[Item]:
        """Events as they come, under asyncio (the socket in the loop's
        selector), lingering like the blocking iterator."""
        import asyncio

        loop = asyncio.get_running_loop()
        fd = self.fileno()
        pending = self._pending
        while True:
            if not pending:
                self._drain(pending, wait=False)
            if pending:
                pause = self.pause()
                while pending:
                    yield pending.popleft()
                if pause:
                    await asyncio.sleep(pause)
                continue
            ready = loop.create_future()

            def wake(fut: asyncio.Future[None] = ready) -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(fd, wake)
            try:
                await ready
            finally:
                loop.remove_reader(fd)

    # --- Internals -----------------------------------------------------

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ValueError("listener is not open")
        return self._sock

    def _next_seq(self) -> int:
        self._seq_request += 1
        return self._seq_request

    def _set_rcvbuf(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        self.stats.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._room = self.stats.rcvbuf / (4 * _QUEUED_EVENT_BYTES)  # events a quarter of it holds

    def _send(self, message: bytes) -> None:
        try:
            self._socket().send(message)
        except ConnectionRefusedError as e:
            raise NamespaceError(
                e.errno, "the process connector answers only in the initial network namespace (ECONNREFUSED)"
            ) from e

    def _subscribe(self) -> None:
        # Requests carry the socket's port id in cn_msg.ack. The kernel
        # multicasts every subscriber's reply to every listener; port ids are
        # unique among live netlink sockets, so reply ack == port_id + 1 is
        # ours.
        if self.events is None:
            self._listen(None, self.ack_timeout)
            return
        # A filter. Its reply never reaches us (cn_filter() passes
        # PROC_EVENT_NONE only to a socket that takes every kind), and a
        # kernel before 6.6 ignores a proc_input without a word. So first
        # subscribe to everything with a proc_input: a reply means the kernel
        # reads proc_input; then narrow it.
        if self._listen(PROC_EVENT_ALL, min(self.ack_timeout, _PROBE_TIMEOUT), required=False):
            self._send(encode_listen(self.events, seq=self._next_seq(), ack=self.port_id, port_id=self.port_id))
            self.stats.kernel_filter = True
            # Filtered events consume the per-CPU counters too: gaps no
            # longer mean loss.
            self._track = False
            self._last_seq.clear()
        else:
            self._listen(None, self.ack_timeout)

    def _listen(self, events: int | None, timeout: float, *, required: bool = True) -> bool:
        self._want_ack = (self.port_id + 1) & _U32
        self._ack = None
        self._listening = True
        self._send(encode_listen(events, seq=self._next_seq(), ack=self.port_id, port_id=self.port_id))
        deadline = time.monotonic() + timeout
        try:
            while self._ack is None:
                self._drain(self._pending, wait=False)
                remaining = deadline - time.monotonic()
                if self._ack is not None or remaining <= 0:
                    break
                self._poller.poll(remaining * 1000)
        finally:
            self._want_ack = None
        ack = self._ack
        if ack is None:
            if required:
                raise NoAckError(
                    errno.ETIMEDOUT,
                    f"no reply to PROC_CN_MCAST_LISTEN within {timeout:g} s: the kernel needs "
                    "CONFIG_PROC_EVENTS, and the caller the initial user and PID namespaces",
                )
            return False
        if ack.err == errno.EPERM:
            raise PrivilegeError(ack.err, "listening to process events needs CAP_NET_ADMIN on this kernel")
        if ack.err:
            raise OSError(ack.err, f"the kernel refused PROC_CN_MCAST_LISTEN: {os.strerror(ack.err)}")
        return True

    def _drain(self, out: MutableSequence[Item], *, wait: bool) -> None:
        """Receive, check, parse, account and filter up to _BATCH datagrams
        into ``out``; with ``wait``, block until the first arrives.

        The hot loop of the listener: one recvmmsg() per batch of datagrams
        (one recvfrom() each where libc lacks it), then ``_take_batch``. The
        queue is known empty when a call finds nothing (EAGAIN), not when a
        batch comes back short: the kernel may be holding an ENOBUFS for the
        next call.
        """
        sock = self._socket()
        if wait and self._resume is None:
            self._poller.poll()  # retried on EINTR after the signal handlers ran (PEP 475)
        batch, fd, dontwait = self._batch, sock.fileno(), _MSG_DONTWAIT
        received, start = 0, len(out)
        self._backlog = True  # until a call finds the queue empty
        try:
            if self._resume is not None and batch is not None:
                n, first = self._resume
                self._take_batch(batch, n, out, first)
            while received < _BATCH:
                if batch is not None:
                    n = batch.receive(fd, dontwait)
                    if n > 0:
                        self._resume = (n, 0)  # until _take_batch is through
                        received += n
                        self._take_batch(batch, n, out)
                        continue
                    err = -n
                else:
                    try:
                        # MSG_TRUNC: the datagram's real length, to tell a truncated one.
                        length, (sender, _groups) = sock.recvfrom_into(self._buf, 0, dontwait | _MSG_TRUNC)
                    except OSError as e:
                        err = e.errno or errno.EIO
                    else:
                        received += 1
                        data = self._view[: min(length, _RECV_SIZE)]
                        self._take(((sender, length > _RECV_SIZE, data),), out)
                        continue
                if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self._backlog = False
                    self._drained(out)
                    break
                if err == errno.ENOBUFS:
                    self._enobufs(out)
                elif err in (errno.ENOSYS, errno.EPERM) and batch is not None:
                    # recvmmsg() refused: a seccomp filter answers ENOSYS or EPERM.
                    self._single()
                    batch = None
                elif err != errno.EINTR:
                    raise OSError(err, os.strerror(err))
        finally:
            self._since_pause += received
            self.stats.events += len(out) - start

    def _single(self) -> None:
        """Receive one datagram per recvfrom() from now on."""
        self._batch = None
        self._resume = None
        self._buf = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buf)

    def _take(self, datagrams: Iterable[tuple[int, bool, Buffer]], out: MutableSequence[Item]) -> None:
        """Check, parse, account and filter received datagrams into ``out``."""
        track, last_seq, passing, append, parse = self._track, self._last_seq, self._pass, out.append, parse_events
        kinds = self.events or 0  # used only when filtering, so never None there
        received = foreign = malformed = filtered = 0
        try:
            for sender, truncated, data in datagrams:
                if sender:  # not the kernel
                    foreign += 1
                    continue
                received += 1
                if truncated:  # longer than the largest datagram the connector sends
                    malformed += 1
                    continue
                try:
                    items = parse(data)
                except ParseError:
                    malformed += 1
                    continue
                for ev in items:
                    cls = type(ev)
                    if cls is NetlinkErrorMessage or cls is Overrun:
                        append(ev)
                        continue
                    if track:
                        seq, cpu = ev.seq, ev.cpu  # type: ignore[union-attr]
                        if seq - last_seq.get(cpu, seq - 1) != 1:
                            self._check_seq(out, cpu, seq)
                        last_seq[cpu] = seq
                    if cls is AckEvent and ev.ack == self._want_ack:  # type: ignore[union-attr]
                        self._ack = ev  # type: ignore[assignment]
                        continue
                    if passing is not None and cls not in passing and not event_matches(ev, kinds):
                        filtered += 1
                        continue
                    append(ev)
        finally:
            stats = self.stats
            stats.received += received
            stats.foreign += foreign
            stats.malformed += malformed
            stats.rejected += foreign + malformed
            stats.filtered += filtered

    def _take_batch(self, batch: Batch, n: int, out: MutableSequence[Item], first: int = 0) -> None:
        """``_take`` for datagrams ``first`` to ``n`` of those ``batch``
        received. Kernel events of the kinds made of integers are read in
        place, by the parser's own guard and readers; anything else goes
        through ``_take``, in order. An exception (KeyboardInterrupt) leaves
        the rest of the batch for the next read."""
        # The user-space filter stays on under a kernel filter: events queued
        # before the kernel narrowed it still pass through here.
        track, last_seq, passing, append = self._track, self._last_seq, self._pass, out.append
        kinds = self.events or 0
        guard, (nl_head, cn_id, cn_len), readers = _KERNEL
        size, view, trunc, new, stride = KERNEL_EVENT_SIZE, batch.view, _MSG_TRUNC, tuple.__new__, batch.size
        frames = batch.frames(n)
        if first:
            frames = itertools.islice(frames, first, None)
        offset = (first - 1) * stride  # the last frame handled
        slow = filtered = 0
        try:
            for (msg_flags, length), (sender,), offset in frames:
                if length == size and not sender:
                    head, ident, cn, what = guard(view, offset)
                    if head == nl_head and ident == cn_id and cn == cn_len and what in readers:
                        read, cls = readers[what]
                        ev: ProcessEvent = new(cls, read(view, offset))
                        # As in _take:
                        if track:
                            seq, cpu = ev.seq, ev.cpu
                            if seq - last_seq.get(cpu, seq - 1) != 1:
                                self._check_seq(out, cpu, seq)
                            last_seq[cpu] = seq
                        if passing is not None and cls not in passing and not event_matches(ev, kinds):
                            filtered += 1
                        else:
                            append(ev)
                        continue
                slow += 1
                data = view[offset : offset + length]
                self._take(((sender, bool(msg_flags & trunc), data),), out)
        except BaseException:
            done = offset // stride + 1
            self._resume = (n, done) if done < n else None
            raise
        else:
            self._resume = None
        finally:
            done = offset // stride + 1
            self.stats.received += done - first - slow  # _take counts its own
            self.stats.filtered += filtered

    def _check_seq(self, out: MutableSequence[Item], cpu: int, seq: int) -> None:
        """``seq`` on ``cpu`` does not follow the last one: wrapped, or lost."""
        if cpu == _NO_CPU:  # a reply before Linux 6.6 echoes its request's seq
            return
        gap = (seq - self._last_seq[cpu] - 1) & _U32
        if gap and gap < 0x80000000:  # else it wrapped, or went back (a restart), not a loss
            self._report_gap(out, gap, cpu)

    def _drained(self, out: MutableSequence[Item]) -> None:
        if self._overflow:
            # The queue is empty: the kernel has cleared its congestion
            # mark, so this overflow's drops are all counted.
            self._report_overflow(out)

    def _enobufs(self, out: MutableSequence[Item]) -> None:
        if self._overflow:
            # A new overflow: the kernel cleared the last one's mark when we
            # emptied the queue, so its drops are all counted.
            self._report_overflow(out)
        self.stats.enobufs += 1
        self._overflow = True

    def _report_gap(self, out: MutableSequence[Item], gap: int, cpu: int) -> None:
        # Drops already reported show up as gaps once their CPU sends again.
        absorbed = min(gap, self._gap_credit)
        self._gap_credit -= absorbed
        gap -= absorbed
        if gap and self._overflow:
            self._pending_gaps += gap  # the overflow's Loss will count it
        elif gap:
            out.append(Loss(gap, "seq-gap", cpu))
            self.stats.lost += gap

    def _report_overflow(self, out: MutableSequence[Item]) -> None:
        self._overflow = False
        drops = self._drops()
        if drops is not None:
            # Zero when the last report already took this overflow's drops
            # (it read the counter after they began).
            count = drops - self._drops_reported
            self._drops_reported = drops
        else:
            count = max(self._pending_gaps, 1)  # ENOBUFS: at least one was dropped
        if count:
            self.stats.lost += count
            out.append(Loss(count, "enobufs", None))
        if self._track:
            # Gaps already seen are part of the drops; the rest will show on
            # CPUs that have been quiet since.
            excess = self._pending_gaps - count
            if excess > 0:
                self.stats.lost += excess
                out.append(Loss(excess, "seq-gap", None))
            else:
                self._gap_credit += -excess
        self._pending_gaps = 0

    def _drops(self) -> int | None:
        """This socket's ``sk_drops``: the Drops column of /proc/net/netlink."""
        try:
            with open("/proc/net/netlink") as f:
                header = f.readline().split()
                drops_at, inode_at = header.index("Drops"), header.index("Inode")
                for line in f:
                    cols = line.split()
                    if len(cols) > inode_at and int(cols[inode_at]) == self._inode:
                        return int(cols[drops_at])
        except (OSError, ValueError):
            pass
        return None


__all__ = [
    "DEFAULT_RCVBUF",
    "DEFAULT_LINGER",
    "Listener",
    "ListenerStats",
    "Loss",
    "Item",
    "PrivilegeError",
    "NoAckError",
    "NamespaceError",
    "NoConnectorError",
]

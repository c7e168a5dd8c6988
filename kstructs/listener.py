"""A process-events listener: a netlink socket, ``recvmmsg()``, then the stream.

``Listener`` binds the ``CN_IDX_PROC`` group of ``NETLINK_CONNECTOR``,
subscribes, and confirms the subscription by the kernel's reply. Then it
yields events, blocking (``for ev in listener``), non-blocking
(``fileno()`` + ``read()``) or under asyncio (``async for``).

It only makes the system calls. Everything between the datagrams and the
events -- the sender check, parsing, loss accounting, the user-space filter,
matching the reply, the statistics, pacing -- is ``kstructs.stream``'s
``EventStream``, which it feeds. What it adds:

- With ``events``, it asks the kernel to filter (``struct proc_input``,
  Linux 6.6); the stream filters in user space as well, so older kernels
  give the same stream.
- Requests carry a nonce from ``secrets`` in ``cn_msg.ack``; the kernel
  sends every reply to every listener, so an error reply is believed only
  when a second request, under a fresh nonce, is refused too.
- It tells the stream the socket's ``Drops`` (``/proc/net/netlink``) when an
  overflow ends, when ``stats`` is read and at ``close()``: ``stats.lost``
  counts every datagram the kernel dropped for the socket.
- An interrupted read (``KeyboardInterrupt``) loses at most the datagram in
  hand: the slots ``recvmmsg()`` filled stay marked until taken.
- ``close()`` sends ``PROC_CN_MCAST_IGNORE`` exactly once, and only from the
  process that opened the listener: the kernel keeps building events for as
  long as it counts a listener.
- A process forked from the one that opened a listener shares its socket.
  The child may close it (or leave a ``with`` block): that closes the
  child's descriptor only, and the parent goes on receiving. The child
  should not read from it -- each datagram goes to whichever process reads
  it first -- but open its own listener.
- ``close()`` may be called from another thread: a thread blocked in the
  iterator wakes and its iteration ends. Otherwise one thread at a time
  reads a listener.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import platform
import secrets
import select
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, MutableSequence
from types import TracebackType
from typing import Final, Self

from kstructs._recvmmsg import Batch
from kstructs.cn_proc import PROC_EVENT_ALL, EventKind
from kstructs.connector import CN_IDX_PROC, CONNECTOR_MAX_MSG_SIZE, cn_msg
from kstructs.errors import NamespaceError, NoAckError, NoConnectorError, PrivilegeError
from kstructs.events import KERNEL_EVENT_SIZE, AckEvent, encode_ignore, encode_listen
from kstructs.netlink import NETLINK_CONNECTOR, nlmsg_space
from kstructs.stream import EventStream, Item, ListenerStats, Loss

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
# Plain ints: the socket module's are IntFlag members, whose & runs in Python.
_MSG_TRUNC: Final = int(socket.MSG_TRUNC)
_MSG_DONTWAIT: Final = int(socket.MSG_DONTWAIT)


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
        if not linger >= 0:
            raise ValueError(f"linger must be a non-negative number of seconds: {linger!r}")
        self._stream = EventStream(events, linger=linger)
        self.events: int | None = self._stream.events
        self.rcvbuf = DEFAULT_RCVBUF if rcvbuf is None else rcvbuf
        self.ack_timeout = ack_timeout
        self.port_id = 0  # the socket's netlink port id, once open
        self.ignore_sent = False
        self._sock: socket.socket | None = None
        self._owner = 0  # the pid that opened it: the only one to send IGNORE
        self._listening = False  # a LISTEN went out: close() owes an IGNORE
        self._closed = False
        self._inode = 0
        # Receive buffers: recvmmsg() slots, or one buffer for recvfrom().
        self._batch: Batch | None = None
        self._buf = bytearray()
        self._view = memoryview(self._buf)
        self._poller = select.poll()
        # close() from another thread: it writes the eventfd, which wakes a
        # reader in poll(), and leaves closing the socket (whose number could
        # otherwise be reused under the reader) to the last reader out.
        self._wake = -1
        self._lock = threading.RLock()  # close() may come from a signal handler
        self._readers = 0
        self._orphan: socket.socket | None = None
        # Received, not yet handed out: what a consumer that stopped
        # iterating left, and what arrived while waiting for a reply.
        self._pending: deque[Item] = deque()
        self._seq_request = 0
        self._nonce = 0  # cn_msg.ack of the last subscribe request

    @property
    def linger(self) -> float:
        return self._stream.linger

    @linger.setter
    def linger(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"linger must be a non-negative number of seconds: {value!r}")
        self._stream.linger = value

    @property
    def stats(self) -> ListenerStats:
        """The statistics; reading them takes in the kernel's drop count, so
        ``lost`` counts every datagram dropped for this socket so far."""
        if self._sock is not None:
            self._count_drops()
        return self._stream.stats

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
        self._sock, self._owner = sock, os.getpid()
        try:
            self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
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
            self._poller.register(self._wake, select.POLLIN)
            self._batch = _new_batch()
            if self._batch is None:
                self._single()
            self._subscribe()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Account the kernel's drops, send ``PROC_CN_MCAST_IGNORE`` (once, if
        a LISTEN went out, and only from the process that opened it) and
        close the socket. From another thread, it wakes a blocked reader."""
        with self._lock:
            sock, self._sock = self._sock, None
            self._closed = True
            if sock is None:
                return
            opener = os.getpid() == self._owner
            try:
                self._count_drops()
                if self._listening and not self.ignore_sent and opener:
                    self.ignore_sent = True
                    try:
                        sock.send(encode_ignore(seq=self._next_seq(), ack=self._nonce, port_id=self.port_id))
                    except OSError:
                        # The socket goes away regardless; the kernel then only
                        # builds events nobody reads until its counter resets.
                        self.ignore_sent = False
            finally:
                if self._readers and opener:
                    self._orphan = sock
                    os.eventfd_write(self._wake, 1)
                else:
                    self._release(sock)

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
        Breaking out loses nothing: the next read or iteration goes on.
        Ends when the listener is closed (by another thread)."""
        self._socket()
        return self._iterate()

    def _iterate(self) -> Iterator[Item]:
        pending = self._pending
        while True:
            if not pending:
                if self._sock is None:
                    return
                self._drain(pending, wait=False)
            if not pending:
                try:
                    self._drain(pending, wait=True)
                except ValueError:
                    if self._sock is None:  # closed by another thread meanwhile
                        return
                    raise
                continue  # what woke us may all be filtered out
            pause = self.pause()
            while pending:
                yield pending.popleft()
            if pause:
                # Events are flowing: let more queue up before the next read.
                time.sleep(pause)

    def pause(self) -> float:
        """How long to wait before the next read, after a read that returned
        events (``EventStream.pause``, now)."""
        return self._stream.pause(time.monotonic())

    def __aiter__(self) -> AsyncIterator[Item]:
        return self.aiter()

    async def aiter(self) -> AsyncIterator[Item]:
        """Events as they come, under asyncio (the socket in the loop's
        selector), lingering like the blocking iterator."""
        import asyncio

        loop = asyncio.get_running_loop()
        fd, wake_fd = self.fileno(), self._wake
        pending = self._pending
        while True:
            if not pending:
                if self._sock is None:
                    return
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

            self._enter()
            try:
                loop.add_reader(fd, wake)
                loop.add_reader(wake_fd, wake)
                try:
                    await ready
                finally:
                    loop.remove_reader(fd)
                    loop.remove_reader(wake_fd)
            finally:
                self._leave()

    # --- Internals -----------------------------------------------------

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ValueError("listener is not open")
        return self._sock

    def _enter(self) -> socket.socket:
        with self._lock:
            sock = self._socket()
            self._readers += 1
        return sock

    def _leave(self) -> None:
        with self._lock:
            self._readers -= 1
            orphan = self._orphan
            if orphan is not None and not self._readers:
                self._orphan = None
                self._release(orphan)

    def _release(self, sock: socket.socket) -> None:
        self._batch = None  # its buffers go with the last reference
        try:
            sock.close()
        finally:
            if self._wake >= 0:
                os.close(self._wake)
                self._wake = -1

    def _next_seq(self) -> int:
        self._seq_request += 1
        return self._seq_request

    def _set_rcvbuf(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        self._stream.set_rcvbuf(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def _send(self, message: bytes) -> None:
        try:
            self._socket().send(message)
        except ConnectionRefusedError as e:
            raise NamespaceError(
                e.errno, "the process connector answers only in the initial network namespace (ECONNREFUSED)"
            ) from e

    def _subscribe(self) -> None:
        if self.events is None:
            self._listen(None, self.ack_timeout)
            return
        # A filter. Its reply never reaches us (cn_filter() passes
        # PROC_EVENT_NONE only to a socket that takes every kind), and a
        # kernel before 6.6 ignores a proc_input without a word. So first
        # subscribe to everything with a proc_input: a reply means the kernel
        # reads proc_input; then narrow it.
        if self._listen(PROC_EVENT_ALL, min(self.ack_timeout, _PROBE_TIMEOUT), required=False):
            self._send(encode_listen(self.events, seq=self._next_seq(), ack=self._nonce, port_id=self.port_id))
            self._stream.kernel_filters()
        else:
            self._listen(None, self.ack_timeout)

    def _listen(self, events: int | None, timeout: float, *, required: bool = True) -> bool:
        # The kernel multicasts every reply to every listener, so anyone who
        # knows a request's nonce can have it answered with an error first.
        # An error is believed when a second request, under a fresh nonce
        # nobody has seen, is refused too.
        ack = None
        for _ in range(2):
            ack = self._request(events, timeout)
            if ack is None:
                if required:
                    raise NoAckError(
                        errno.ETIMEDOUT,
                        f"no reply to PROC_CN_MCAST_LISTEN within {timeout:g} s: the kernel needs "
                        "CONFIG_PROC_EVENTS, and the caller the initial user and PID namespaces",
                    )
                return False
            if not ack.err:
                return True
        assert ack is not None
        if not required:
            # The proc_input probe. A kernel before 6.6 never answers it, so
            # its error replies are forged; the plain request that follows
            # meets any real refusal.
            return False
        if ack.err == errno.EPERM:
            raise PrivilegeError(ack.err, "listening to process events needs CAP_NET_ADMIN on this kernel")
        raise OSError(ack.err, f"the kernel refused PROC_CN_MCAST_LISTEN: {os.strerror(ack.err)}")

    def _request(self, events: int | None, timeout: float) -> AckEvent | None:
        """Send a LISTEN under a fresh nonce (again after an overflow); the
        reply, or None after ``timeout``."""
        stream, deadline = self._stream, time.monotonic() + timeout
        try:
            enobufs = -1
            while True:
                if enobufs != stream.stats.enobufs:
                    # First, or the queue overflowed: the reply may be among the drops.
                    enobufs = stream.stats.enobufs
                    self._nonce = secrets.randbits(32)
                    stream.expect_ack(self._nonce)
                    self._listening = True
                    self._send(encode_listen(events, seq=self._next_seq(), ack=self._nonce, port_id=self.port_id))
                self._drain(self._pending, wait=False)
                ack, remaining = stream.ack, deadline - time.monotonic()
                # The kernel answers inside send(): once the queue is empty,
                # its reply has been read, and a success preferred to an error.
                if (ack is not None and (not ack.err or not stream.backlog)) or remaining <= 0:
                    return ack
                if enobufs == stream.stats.enobufs:
                    self._poller.poll(remaining * 1000)
        finally:
            stream.expect_ack(None)

    def _drain(self, out: MutableSequence[Item], *, wait: bool) -> None:
        """Receive up to _BATCH datagrams into the stream, and what it makes
        of them into ``out``; with ``wait``, block until the first arrives.

        One recvmmsg() per batch of datagrams (one recvfrom() each where libc
        lacks it). The queue is known empty when a call finds nothing
        (EAGAIN), not when a batch comes back short: the kernel may be
        holding an ENOBUFS for the next call.
        """
        sock = self._enter()
        try:
            stream, batch, fd, dontwait = self._stream, self._batch, sock.fileno(), _MSG_DONTWAIT
            # A batch an exception (a signal) interrupted, even before the
            # count came back from recvmmsg(): the rest of it first.
            left = batch.filled() if batch is not None else 0
            if left and batch is not None:
                self._take_batch(batch, left, out, stream.offset // batch.size + 1)
            elif wait:
                self._poller.poll()  # retried on EINTR after the signal handlers ran (PEP 475)
                if self._sock is None:  # closed by another thread
                    return
            received = 0
            while received < _BATCH:
                if batch is not None:
                    stream.offset = -batch.size  # none of the next batch taken yet
                    n = batch.receive(fd, dontwait)
                    if n > 0:
                        received += n
                        self._take_batch(batch, n, out, 0)
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
                        stream.receive(sender, length > _RECV_SIZE, self._view[: min(length, _RECV_SIZE)], out)
                        continue
                if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                    stream.drained(out, self._drops() if stream.overflowing else None)
                    break
                if err == errno.ENOBUFS:
                    stream.enobufs(out, self._drops() if stream.overflowing else None)
                elif err in (errno.ENOSYS, errno.EPERM) and batch is not None:
                    # recvmmsg() refused: a seccomp filter answers ENOSYS or EPERM.
                    self._single()
                    batch = None
                elif err != errno.EINTR:
                    raise OSError(err, os.strerror(err))
        finally:
            self._leave()

    def _take_batch(self, batch: Batch, n: int, out: MutableSequence[Item], first: int) -> None:
        """Datagrams ``first`` to ``n`` of those ``batch`` holds, into the
        stream. An exception (KeyboardInterrupt) leaves the rest of the batch,
        marked full, for the next read."""
        frames = batch.frames(n)
        self._stream.receive_frames(batch.view, itertools.islice(frames, first, None) if first else frames, out)
        batch.clear(n)

    def _single(self) -> None:
        """Receive one datagram per recvfrom() from now on."""
        self._batch = None
        self._buf = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buf)

    def _count_drops(self) -> None:
        drops = self._drops()
        if drops is not None:
            self._stream.kernel_drops(drops)

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

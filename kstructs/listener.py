"""A process-events listener: a netlink socket, ``recvmmsg()``, then the stream.

``Listener`` binds the ``CN_IDX_PROC`` group of ``NETLINK_CONNECTOR``,
subscribes, and confirms the subscription by the kernel's reply. Then it
yields events, blocking (``for ev in listener``), non-blocking
(``fileno()`` + ``read()``) or under asyncio (``async for``).

Itself it keeps the life cycle (``open()``, ``close()``), the ``poll()`` that
waits, the read loop (what each receive's errno means) and the iterators; one
module does each of the rest. ``kstructs.stream``'s ``EventStream``: what the
datagrams mean (the sender check, parsing, loss accounting, the user-space
filter, the statistics, pacing). ``kstructs._subscription``: the requests,
their nonces, what a reply means, and the handshake that waits for it.
``kstructs._socket``: making, sizing and binding the socket, sending to it,
and the errors that explain its failures. ``kstructs._receive``: the two ways
of receiving (``recvmmsg()``, ``recvfrom()``) and the drop count.
``kstructs._gate``: who is reading, for ``close()`` from another thread.

- With ``events``, it asks the kernel to filter (``struct proc_input``,
  Linux 6.6); the stream filters in user space as well, so older kernels
  give the same stream.
- It tells the stream the socket's ``Drops`` (``/proc/net/netlink``) when an
  overflow ends, when ``stats`` is read and at ``close()``: ``stats.lost``
  counts every datagram the kernel dropped for the socket.
- An interrupted read (``KeyboardInterrupt``) loses at most the datagram in
  hand: the slots ``recvmmsg()`` filled stay marked until taken.
- ``close()`` sends ``PROC_CN_MCAST_IGNORE``, once, and only from the process
  that opened the listener. A forked child may close it (that closes the
  child's descriptor only) but should not read from it: each datagram goes
  to whichever process reads it first.
- ``close()`` may be called from another thread: a thread blocked in the
  iterator wakes and its iteration ends. Otherwise one thread at a time
  reads a listener.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, MutableSequence
from functools import partial
from typing import Final, Self

from kstructs import _receive, _socket
from kstructs._gate import ReaderGate
from kstructs._socket import DEFAULT_RCVBUF
from kstructs._subscription import Exchange, Subscription
from kstructs.cn_proc import EventKind
from kstructs.errors import NamespaceError, NoAckError, NoConnectorError, PrivilegeError
from kstructs.stream import DEFAULT_LINGER, EventStream, Item, ListenerStats, Loss

_BATCH: Final = 1024  # datagrams one read takes at most: bounds its latency and its list


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
    than an event); 0 reads again at once. Under a storm too fast for the
    receive buffer the wait is shorter (``pause``).
    """

    def __init__(
        self,
        events: EventKind | int | None = None,
        *,
        rcvbuf: int | None = None,
        ack_timeout: float = 1.0,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self._stream = EventStream(events, linger=linger)
        self.events: int | None = self._stream.events
        self.rcvbuf = DEFAULT_RCVBUF if rcvbuf is None else rcvbuf
        self.ack_timeout = ack_timeout
        self.port_id = 0  # the socket's netlink port id, once open
        self._gate = ReaderGate()  # the socket, and who is reading it
        self._subscription = Subscription(self._stream)
        self._closed = False
        self._inode = 0
        self._receiver: _receive.Receiver | None = None  # recvmmsg() or recvfrom(), once open
        self._poller = select.poll()
        # Received, not yet handed out: what a consumer that stopped
        # iterating left, and what arrived while waiting for a reply.
        self._pending: deque[Item] = deque()

    @property
    def linger(self) -> float:
        return self._stream.linger

    @linger.setter
    def linger(self, value: float) -> None:
        self._stream.linger = value

    @property
    def ignore_sent(self) -> bool:
        """Whether ``close()`` sent ``PROC_CN_MCAST_IGNORE``."""
        return self._subscription.ignore_sent

    @property
    def stats(self) -> ListenerStats:
        """The statistics, with the kernel's drop count taken in: ``lost``
        counts every datagram dropped for this socket so far."""
        if self._gate.sock is not None:
            _receive.count_drops(self._stream, self._inode)
        return self._stream.stats

    # --- Life cycle ----------------------------------------------------

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> Self:
        """Bind, subscribe and wait for the kernel's reply; idempotent."""
        if self._gate.sock is not None:
            return self
        if self._closed:
            raise ValueError("listener is closed")
        sock = _socket.bound(self.rcvbuf)
        self._subscription.owner = os.getpid()
        try:
            with self._gate.lock:
                self._gate.open(sock)
                if self._closed:  # by a close() while binding (another thread, a signal handler)
                    raise ValueError("listener is closed")
            self._stream.set_rcvbuf(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
            self.port_id = self._subscription.port_id = sock.getsockname()[0]
            self._inode = os.fstat(sock.fileno()).st_ino
            self._poller.register(sock.fileno(), select.POLLIN)
            self._poller.register(self._gate.wake, select.POLLIN)
            self._receiver = _receive.receiver(sock)
            take = partial(self._drain, self._pending, wait=False)
            io = Exchange(self._send, take, self._wait, time.monotonic, _socket.cap_net_admin, _socket.kernel_version)
            self._subscription.subscribe(self.events, self.ack_timeout, io)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Account the kernel's drops, send the ``IGNORE`` the subscription
        owes, and close the socket. From another thread, it wakes a blocked reader."""
        gate = self._gate
        with gate.lock:
            sock, gate.sock, sub = gate.sock, None, self._subscription
            self._closed = True
            if sock is None:
                return
            self._receiver = None  # its buffers go with the last reference
            pid = os.getpid()
            try:
                _receive.count_drops(self._stream, self._inode)
                sub.release(pid, partial(_socket.send, sock))
            finally:
                gate.close(sock, owner=pid == sub.owner)

    def fileno(self) -> int:
        return self._gate.current().fileno()

    @property
    def closed(self) -> bool:
        return self._gate.sock is None

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
        self._gate.current()
        return self._iterate()

    def _refill(self) -> bool:
        """What has arrived into the pending events, if there are none: False once closed."""
        if not self._pending:
            if self._gate.sock is None:
                return False
            self._drain(self._pending, wait=False)
        return True

    def _iterate(self) -> Iterator[Item]:
        pending, pause, clock, sleep = self._pending, self._stream.pause, time.monotonic, time.sleep
        while self._refill():
            if not pending:
                try:
                    self._drain(pending, wait=True)
                except ValueError:
                    if self._gate.sock is None:  # closed by another thread meanwhile
                        return
                    raise
                continue  # what woke us may all be filtered out
            wait = pause(clock())
            while pending:
                yield pending.popleft()
            if wait:
                sleep(wait)  # events are flowing: let more queue up before the next read

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
        fd, wake_fd, gate = self.fileno(), self._gate.wake, self._gate
        pending = self._pending
        while self._refill():
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

            gate.enter()
            try:
                loop.add_reader(fd, wake)
                loop.add_reader(wake_fd, wake)
                try:
                    await ready
                finally:
                    loop.remove_reader(fd)
                    loop.remove_reader(wake_fd)
            finally:
                gate.leave()

    # --- Internals -----------------------------------------------------

    def _send(self, message: bytes) -> None:
        _socket.send(self._gate.current(), message)  # the handshake's: ValueError once closed meanwhile

    def _wait(self, seconds: float) -> None:
        self._poller.poll(seconds * 1000)  # the handshake's: a datagram or close()'s eventfd wakes it

    def _drain(self, out: MutableSequence[Item], *, wait: bool) -> None:
        """Receive up to _BATCH datagrams into the stream, and what it makes
        of them into ``out``; with ``wait``, block until the first arrives.

        One recvmmsg() per batch of datagrams (one recvfrom() each where libc
        lacks it, or a seccomp filter refuses it: ``kstructs._receive``). The
        queue is known empty when a call finds nothing (EAGAIN), not when a
        batch comes back short: the kernel may be holding an ENOBUFS for the
        next call.
        """
        gate = self._gate
        gate.enter()
        try:
            stream, receiver = self._stream, self._receiver
            if receiver is None:  # closed by another thread
                return
            if not receiver.resume(stream, out) and wait:
                self._poller.poll()  # retried on EINTR after the signal handlers ran (PEP 475)
                if gate.sock is None:  # closed by another thread
                    return
            received = 0
            while received < _BATCH:
                n = receiver.receive(stream, out)
                if n > 0:
                    received += n
                    continue
                err = -n
                if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                    stream.drained(out, _receive.drops(self._inode) if stream.overflowing else None)
                    break
                if err == errno.ENOBUFS:
                    stream.enobufs(out, _receive.drops(self._inode) if stream.overflowing else None)
                elif (other := receiver.fallback(err)) is not None:
                    self._receiver = receiver = other
                elif err != errno.EINTR:
                    raise OSError(err, os.strerror(err))
        finally:
            gate.leave()


__all__ = ["DEFAULT_RCVBUF", "DEFAULT_LINGER", "Listener", "ListenerStats", "Loss", "Item"]
__all__ += ["PrivilegeError", "NoAckError", "NamespaceError", "NoConnectorError"]

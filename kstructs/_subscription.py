"""The subscription to process events with no socket and no clock: the
requests, their nonces, what the kernel's reply means, the handshake that
sends them and waits for the reply over the I/O it is handed (``Exchange``),
and the ``PROC_CN_MCAST_IGNORE`` owed.

- Requests carry a nonce in ``cn_msg.ack``. The kernel multicasts every
  reply to every listener, so anyone who knows a request's nonce can have it
  answered with an error first: an error is believed only when a second
  request, under a fresh nonce nobody has seen, is refused too.
- An ``ENOBUFS`` while waiting may have dropped the reply: the request is
  sent again, under a fresh nonce.
- With a filter, the handshake first subscribes to everything with a
  ``proc_input``, whose reply proves that the kernel reads one; then it
  narrows the subscription (``subscribe``).
- The ``IGNORE`` goes out once, if a ``LISTEN`` did, and only from the
  process that opened the socket: a forked child shares the socket, and its
  ``IGNORE`` would stop the parent's events (the kernel counts listeners,
  not sockets).
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from typing import Final, NamedTuple

from kstructs.cn_proc import PROC_EVENT_ALL
from kstructs.errors import NoAckError, PrivilegeError
from kstructs.events import AckEvent, encode_ignore, encode_listen
from kstructs.stream import EventStream

# The kernel answers a subscribe request inside sendmsg() (cn_rx_skb() runs
# the callback synchronously): the probe for proc_input support needs no long wait.
PROBE_TIMEOUT: Final = 0.25


class Exchange(NamedTuple):
    """The I/O a handshake needs, as callables."""

    send: Callable[[bytes], object]  # a request to the kernel
    take: Callable[[], None]  # what has arrived, into the stream, without blocking
    wait: Callable[[float], object]  # until something arrives, or for that many seconds
    clock: Callable[[], float]  # monotonic seconds
    cap_net_admin: Callable[[], bool | None]  # whether the process holds CAP_NET_ADMIN (None: not known)
    kernel: Callable[[], tuple[int, int] | None]  # the running kernel's (major, minor) (None: not known)


class Subscription:
    """Requests whose replies ``stream`` looks for. ``owner`` and
    ``port_id``: the process that opened the socket, and its port id."""

    def __init__(self, stream: EventStream, owner: int = 0, port_id: int = 0) -> None:
        self.stream, self.owner, self.port_id = stream, owner, port_id
        self.nonce = 0  # cn_msg.ack of the last LISTEN
        self.seq = 0  # cn_msg.seq of the last request
        self.listening = False  # a LISTEN went out: an IGNORE is owed
        self.ignore_sent = False
        self._enobufs = -1  # stream.stats.enobufs when the last LISTEN went out

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def start(self) -> None:
        """A new request: ``due()`` until ``listen()`` makes it."""
        self._enobufs = -1

    def due(self) -> bool:
        """Whether to send a ``LISTEN`` now: none has gone out since
        ``start()``, or the queue overflowed since the last one."""
        return self._enobufs != self.stream.stats.enobufs

    def listen(self, events: int | None) -> bytes:
        """A ``LISTEN`` for ``events`` (``None``: without a ``proc_input``)
        under a fresh nonce, whose reply the stream is told to look for."""
        self._enobufs = self.stream.stats.enobufs
        self.nonce = secrets.randbits(32)
        self.stream.expect_ack(self.nonce)
        self.listening = True
        return encode_listen(events, seq=self._next_seq(), ack=self.nonce, port_id=self.port_id)

    def narrow(self, events: int) -> bytes:
        """The ``LISTEN`` that narrows a subscription the kernel has
        confirmed with a ``proc_input`` to ``events``: the kernel filters."""
        self.stream.kernel_filters()
        return encode_listen(events, seq=self._next_seq(), ack=self.nonce, port_id=self.port_id)

    def answered(self) -> bool:
        """Whether to stop waiting: a success came, or an error and the queue
        was found empty since (the kernel answers inside ``send()``, so the
        reply to our request has been read by then)."""
        ack = self.stream.ack
        return ack is not None and (not ack.err or not self.stream.backlog)

    def subscribe(self, events: int | None, timeout: float, io: Exchange) -> None:
        """Subscribe to ``events`` (``None``: everything, without a
        ``proc_input``), each request's reply awaited up to ``timeout``."""
        if events is None:
            self.confirm(None, timeout, io)
            return
        # A filter. Its reply never reaches us (cn_filter() passes
        # PROC_EVENT_NONE only to a socket that takes every kind), and a
        # kernel before 6.6 ignores a proc_input without a word. So first
        # subscribe to everything with a proc_input: a reply means the kernel
        # reads proc_input; then narrow it.
        if self.confirm(PROC_EVENT_ALL, min(timeout, PROBE_TIMEOUT), io, required=False):
            io.send(self.narrow(events))
        else:
            self.confirm(None, timeout, io)

    def confirm(self, events: int | None, timeout: float, io: Exchange, *, required: bool = True) -> bool:
        """Subscribe, asking again once after an error reply (see
        ``verdict``): whether the kernel answered."""
        attempt = 0
        while True:
            ack = self.request(events, timeout, io)
            cap, kernel = (io.cap_net_admin(), io.kernel()) if ack is None and required else (None, None)
            answer = self.verdict(ack, attempt, timeout, required=required, cap_net_admin=cap, kernel=kernel)
            if answer is not None:
                return answer
            attempt += 1

    def request(self, events: int | None, timeout: float, io: Exchange) -> AckEvent | None:
        """Send a ``LISTEN`` (again after an overflow) and wait up to
        ``timeout``: the reply, or None."""
        deadline = io.clock() + timeout
        self.start()
        try:
            while True:
                if self.due():
                    io.send(self.listen(events))
                io.take()
                remaining = deadline - io.clock()
                if self.answered() or remaining <= 0:
                    return self.stream.ack
                if not self.due():
                    io.wait(remaining)
        finally:
            self.stream.expect_ack(None)

    @staticmethod
    def verdict(
        ack: AckEvent | None,
        attempt: int,
        timeout: float,
        *,
        required: bool,
        cap_net_admin: bool | None = None,
        kernel: tuple[int, int] | None = None,
    ) -> bool | None:
        """What the reply to request ``attempt`` (0, then 1) means: ``True``
        subscribed, ``False`` no reply (when not ``required``), ``None`` ask
        again under a fresh nonce. Raises for no reply when ``required``
        (``cap_net_admin``: whether the process holds it, ``kernel``: the
        running kernel's (major, minor); None: not known), and for a second
        error when ``required``; a second error to the probe (not
        ``required``) is ``False``."""
        if ack is None:
            if not required:
                return False
            if cap_net_admin is False and kernel is not None and kernel < (6, 6):
                # Before 6.6, cn_proc refuses a request without CAP_NET_ADMIN,
                # and cn_proc_ack() says so only while someone listens. Since
                # 6.6 it checks no capability: the reasons below remain.
                why = "this process lacks CAP_NET_ADMIN, and a kernel before Linux 6.6 ignores its subscription"
            else:
                why = "the kernel needs CONFIG_PROC_EVENTS, and the caller the initial user and PID namespaces"
            raise NoAckError(errno.ETIMEDOUT, f"no reply to PROC_CN_MCAST_LISTEN within {timeout:g} s: {why}")
        if not ack.err:
            return True
        if not attempt:
            return None
        if not required:
            # The proc_input probe. A kernel before 6.6 never answers it, so
            # its error replies are forged; the plain request that follows
            # meets any real refusal.
            return False
        if ack.err == errno.EPERM:
            raise PrivilegeError(ack.err, "listening to process events needs CAP_NET_ADMIN on this kernel")
        raise OSError(ack.err, f"the kernel refused PROC_CN_MCAST_LISTEN: {os.strerror(ack.err)}")

    def ignore(self, pid: int) -> bytes | None:
        """The ``IGNORE`` to send when process ``pid`` closes the socket, or
        ``None`` (none owed, already sent, or ``pid`` is not the owner)."""
        if not self.listening or self.ignore_sent or pid != self.owner:
            return None
        self.ignore_sent = True
        return encode_ignore(seq=self._next_seq(), ack=self.nonce, port_id=self.port_id)

    def ignore_failed(self) -> None:
        """The ``IGNORE`` could not be sent: none went out."""
        self.ignore_sent = False

    def release(self, pid: int, send: Callable[[bytes], object]) -> None:
        """Send the ``IGNORE`` owed (see ``ignore``) as process ``pid`` closes
        the socket; if ``send`` fails, none went out."""
        message = self.ignore(pid)
        if message is not None:
            try:
                send(message)
            except OSError:  # the kernel then builds events nobody reads until its count resets
                self.ignore_failed()

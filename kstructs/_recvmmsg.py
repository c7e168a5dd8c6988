"""``recvmmsg(2)`` through ctypes: many datagrams in one system call.

The standard library's sockets have no ``recvmmsg()``; under a fork storm a
listener would pay one system call per event. ``Batch`` calls libc's with a
fixed array of slots and hands back what arrived. The layouts below are
libc's (``<sys/socket.h>``, ``<bits/uio.h>``), not the kernel UAPI headers
the rest of the package mirrors; the tests check them against the C
compiler.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import struct
from collections.abc import Callable, Iterator
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final

from kstructs.netlink import sockaddr_nl

if TYPE_CHECKING:
    from kstructs._typing import U32, Int, Nested, SizeT, UInt, VoidP


class iovec(ctypes.Structure):
    iov_base: VoidP
    iov_len: SizeT
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class msghdr(ctypes.Structure):
    # glibc's: msg_iovlen and msg_controllen are size_t (musl pads an int to
    # the same size and offset).
    msg_name: VoidP
    msg_namelen: U32  # socklen_t
    msg_iov: VoidP
    msg_iovlen: SizeT
    msg_control: VoidP
    msg_controllen: SizeT
    msg_flags: Int
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class mmsghdr(ctypes.Structure):
    msg_hdr: Nested[msghdr]
    msg_len: UInt
    _fields_ = [("msg_hdr", msghdr), ("msg_len", ctypes.c_uint)]


def _libc_recvmmsg() -> Callable[..., int] | None:
    try:
        function: Any = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):  # no libc to load, or one without recvmmsg
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    function.restype = ctypes.c_int
    found: Callable[..., int] = function
    return found


_RECVMMSG: Final = _libc_recvmmsg()
# msg_len of an empty slot: longer than any datagram a slot can hold.
_EMPTY: Final = 0xFFFFFFFF


class Batch:
    """Room for ``vlen`` datagrams of up to ``size`` bytes each, and the
    ``recvmmsg()`` call that fills it.

    ``receive(fd, flags)`` returns the number of datagrams received, or a
    negative errno (no exception on the hot path: an empty queue is the
    normal end of every drain). ``frames(n)`` then tells where each
    datagram is in ``view`` (valid until the next ``receive``), how long it
    is, who sent it and whether it was truncated. The slots stay marked
    full until ``clear(n)``; ``filled()`` counts them, so a caller
    interrupted between ``receive`` and its use of the count loses nothing.
    """

    def __init__(self, vlen: int, size: int, common: int) -> None:
        if _RECVMMSG is None:
            raise OSError(errno.ENOSYS, "libc has no recvmmsg()")
        self.vlen, self.size, self.common = vlen, size, common
        self._recvmmsg = _RECVMMSG
        # Anonymous memory: the kernel gives pages as they are first written,
        # so slots sized for the largest datagram cost little.
        self._memory = mmap.mmap(-1, vlen * size, flags=mmap.MAP_PRIVATE)  # not shared with a forked child
        self._data = (ctypes.c_char * (vlen * size)).from_buffer(self._memory)
        self._names = (sockaddr_nl * vlen)()
        self._iov = (iovec * vlen)()
        self._msgs = (mmsghdr * vlen)()
        data, names, iov = ctypes.addressof(self._data), ctypes.addressof(self._names), ctypes.addressof(self._iov)
        for i in range(vlen):
            self._iov[i].iov_base = data + i * size
            self._iov[i].iov_len = size
            hdr = self._msgs[i].msg_hdr
            hdr.msg_name = names + i * ctypes.sizeof(sockaddr_nl)
            # The kernel writes the address length back: sizeof(sockaddr_nl)
            # for every netlink datagram, so it never needs resetting.
            hdr.msg_namelen = ctypes.sizeof(sockaddr_nl)
            hdr.msg_iov = iov + i * ctypes.sizeof(iovec)
            hdr.msg_iovlen = 1
        #: The slots, back to back: datagram i starts at i * size.
        self.view = memoryview(self._data).cast("B")
        self._msgs_view = memoryview(self._msgs).cast("B")
        self._names_view = memoryview(self._names).cast("B")
        # What each mmsghdr and sockaddr_nl holds for us, read by iter_unpack.
        flags_at = mmsghdr.msg_hdr.offset + msghdr.msg_flags.offset
        len_at = mmsghdr.msg_len.offset
        gap = len_at - flags_at - msghdr.msg_flags.size
        tail = ctypes.sizeof(mmsghdr) - len_at - mmsghdr.msg_len.size
        self._results = struct.Struct(f"={flags_at}xi{gap}xI{tail}x")
        assert self._results.size == ctypes.sizeof(mmsghdr)
        pid_at = sockaddr_nl.nl_pid.offset
        self._senders = struct.Struct(f"={pid_at}xI{ctypes.sizeof(sockaddr_nl) - pid_at - sockaddr_nl.nl_pid.size}x")
        # The array as recvmmsg() leaves it when every datagram is ``common``
        # bytes long and arrived whole: one compare checks a whole batch.
        for i in range(vlen):
            self._msgs[i].msg_len = common
        self._uniform = bytes(self._msgs_view)
        # A slot whose msg_len is _EMPTY holds nothing: recvmmsg() writes the
        # length of each datagram it returns before it returns, so what it
        # received is known even if the caller never saw the count.
        for i in range(vlen):
            self._msgs[i].msg_len = _EMPTY
        self._cleared = memoryview(bytes(self._msgs_view))
        # Each slot's msg_len, as a strided view of the array (4-aligned in a 4-multiple slot).
        assert not len_at % 4 and not ctypes.sizeof(mmsghdr) % 4
        self._lens = self._msgs_view.cast("I")[len_at // 4 :: ctypes.sizeof(mmsghdr) // 4]

    def receive(self, fd: int, flags: int) -> int:
        """Fill the slots (call ``clear`` first); the number filled, or a negative errno."""
        n = self._recvmmsg(fd, self._msgs, self.vlen, flags, None)
        return n if n >= 0 else -ctypes.get_errno()

    def filled(self) -> int:
        """How many slots hold a datagram not yet cleared: what the last
        ``receive`` returned, even to a caller that an exception (a signal)
        stopped before it saw the count."""
        lens, n = self._lens, 0
        while n < self.vlen and lens[n] != _EMPTY:
            n += 1
        return n

    def clear(self, n: int) -> None:
        """Mark the first ``n`` slots empty: their datagrams are taken."""
        end = n * self._results.size  # sizeof(mmsghdr)
        self._msgs_view[:end] = self._cleared[:end]

    def uniform(self, n: int) -> int | None:
        """The sender's port id when each of the first ``n`` datagrams is
        ``common`` bytes long, whole, and from one sender to one group; else None."""
        if self._uniform.startswith(self._msgs_view[: n * self._results.size]):
            names = bytes(self._names_view[: n * self._senders.size])
            first = names[: self._senders.size]
            if names == first * n:
                sender: int = self._senders.unpack(first)[0]
                return sender
        return None

    def frames(self, n: int) -> Iterator[tuple[tuple[int, int], tuple[int], int]]:
        """For each of the first ``n`` datagrams: ``(msg_flags, length)``,
        ``(sender port id,)`` and its offset in ``view``."""
        offsets = range(0, n * self.size, self.size)
        sender = self.uniform(n)
        if sender is not None:
            return zip(repeat((0, self.common), n), repeat((sender,), n), offsets, strict=False)
        results = self._results.iter_unpack(self._msgs_view[: n * self._results.size])
        senders = self._senders.iter_unpack(self._names_view[: n * self._senders.size])
        return zip(results, senders, offsets, strict=False)

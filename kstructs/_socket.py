"""The listener's netlink socket: made, sized, bound and written to, each
failure that has a known cause raised as the error that names it.

- ``socket()`` failing with ``EPROTONOSUPPORT`` is a ``NoConnectorError``: no
  ``CONFIG_CONNECTOR``, or an emulator (qemu-user) not passing it on.
- The receive buffer is asked for with ``SO_RCVBUFFORCE`` when privileged,
  else with ``SO_RCVBUF`` (capped by ``net.core.rmem_max``).
- ``bind()`` to ``CN_IDX_PROC`` failing with ``EPERM`` is a
  ``PrivilegeError``: before Linux 6.6 the group needs ``CAP_NET_ADMIN``.
- ``send()`` failing with ``ECONNREFUSED`` is a ``NamespaceError``: the
  process connector answers only in the initial network namespace.
- ``cap_net_admin()`` reads the process's ``CapEff`` from ``/proc/self/status``,
  and ``kernel_version()`` the running kernel's version from ``uname()``: together
  they explain a request the kernel left unanswered.

Other failures stay ``OSError`` with their errno.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import socket
from collections.abc import Iterable
from typing import Final

from kstructs.connector import CN_IDX_PROC
from kstructs.errors import NamespaceError, NoConnectorError, PrivilegeError
from kstructs.netlink import NETLINK_CONNECTOR

# include/uapi/asm-generic/socket.h; alpha, parisc and sparc number it 0x100b.
SO_RCVBUFFORCE: Final = getattr(
    socket, "SO_RCVBUFFORCE", 0x100B if platform.machine().startswith(("alpha", "parisc", "sparc")) else 33
)

# include/uapi/linux/capability.h
CAP_NET_ADMIN: Final = 12

#: Receive buffer asked for by default. One event costs the queue about 800
#: bytes (the skb's truesize), and the kernel doubles the request: 16 MiB of
#: queue holds some 20 000 events, over half a second of a fork storm.
DEFAULT_RCVBUF: Final = 8 << 20


def bound(rcvbuf: int) -> socket.socket:
    """A ``NETLINK_CONNECTOR`` socket bound to the process events group, its
    receive buffer asked for ``rcvbuf`` bytes (closed again if sizing or binding fails)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
    except OSError as e:
        if e.errno == errno.EPROTONOSUPPORT:
            why = "no connector in this kernel (CONFIG_CONNECTOR), or an emulator (qemu-user) not passing it"
            raise NoConnectorError(e.errno, f"NETLINK_CONNECTOR is not supported: {why}") from e
        raise
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            sock.bind((0, CN_IDX_PROC))
        except PermissionError as e:
            raise PrivilegeError(
                e.errno, "binding to the process events group needs CAP_NET_ADMIN on this kernel (before Linux 6.6)"
            ) from e
    except BaseException:
        sock.close()
        raise
    return sock


def send(sock: socket.socket, message: bytes) -> None:
    """Send a request to the kernel."""
    try:
        sock.send(message)
    except ConnectionRefusedError as e:
        raise NamespaceError(
            e.errno, "the process connector answers only in the initial network namespace (ECONNREFUSED)"
        ) from e


def cap_net_admin() -> bool | None:
    """Whether this process holds ``CAP_NET_ADMIN`` (None: not known)."""
    try:
        with open("/proc/self/status") as f:
            return cap_net_admin_in(f)
    except OSError:
        return None


def cap_net_admin_in(lines: Iterable[str]) -> bool | None:
    """``cap_net_admin`` from the lines of a /proc/PID/status."""
    for line in lines:
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
            except (IndexError, ValueError):
                return None
    return None


def kernel_version() -> tuple[int, int] | None:
    """The running kernel's (major, minor) version (None: not known)."""
    return kernel_version_in(os.uname().release)


def kernel_version_in(release: str) -> tuple[int, int] | None:
    """``kernel_version`` from a ``uname -r`` string: ``6.1.0-13-amd64`` is (6, 1)."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return None if match is None else (int(match[1]), int(match[2]))

"""kstructs._socket on a stand-in socket: what each failure becomes, the
capability read from /proc and the kernel's version from uname (no root); and
the capability once root's are dropped (marked root)."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
from typing import Any

import pytest
from conftest import c_values

from kstructs import _socket
from kstructs.errors import KstructsError, NamespaceError, NoConnectorError, PrivilegeError

AF_NETLINK, NETLINK_CONNECTOR, CN_IDX_PROC = 16, 11, 1  # <linux/socket.h>, <linux/netlink.h>, <linux/connector.h>


class Fake:
    """A socket whose calls fail as ``fail`` says: {method name: the exception to raise}."""

    def __init__(self, fail: dict[str, BaseException]) -> None:
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []
        self.closed = False

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        error = self.fail.get(name)
        if error is not None:
            raise error

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._call("setsockopt", level, option, value)
        if option == _socket.SO_RCVBUFFORCE and "force" in self.fail:
            raise self.fail["force"]

    def bind(self, address: tuple[int, int]) -> None:
        self._call("bind", address)

    def send(self, data: bytes) -> int:
        self._call("send", data)
        return len(data)

    def close(self) -> None:
        self.closed = True


def oserror(code: int) -> OSError:
    """The OSError a system call failing with ``code`` raises (its subclass included)."""
    return OSError(code, os.strerror(code))


def stand_in(monkeypatch: pytest.MonkeyPatch, fake: Fake | OSError) -> list[tuple[int, int, int]]:
    """socket.socket() made ``fake`` (or failed with it); the arguments of each call."""
    made: list[tuple[int, int, int]] = []

    def make(family: int, kind: int, proto: int) -> Fake:
        made.append((family, kind, proto))
        if isinstance(fake, OSError):
            raise fake
        return fake

    monkeypatch.setattr(socket, "socket", make)
    return made


def test_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake({})
    made = stand_in(monkeypatch, fake)
    assert _socket.bound(4096) is fake  # type: ignore[comparison-overlap]
    assert made == [(AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)]
    assert fake.calls == [("setsockopt", socket.SOL_SOCKET, _socket.SO_RCVBUFFORCE, 4096), ("bind", (0, CN_IDX_PROC))]
    assert not fake.closed


def test_without_privilege_the_buffer_is_asked_for_with_so_rcvbuf(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake({"force": oserror(errno.EPERM)})
    stand_in(monkeypatch, fake)
    _socket.bound(4096)
    assert [c for c in fake.calls if c[0] == "setsockopt"] == [
        ("setsockopt", socket.SOL_SOCKET, _socket.SO_RCVBUFFORCE, 4096),
        ("setsockopt", socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),
    ]


@pytest.mark.cc
def test_the_constants_are_the_c_compilers() -> None:
    prelude = "#include <sys/socket.h>\n#include <linux/capability.h>\n"
    c = c_values({"SO_RCVBUFFORCE": "SO_RCVBUFFORCE", "CAP_NET_ADMIN": "CAP_NET_ADMIN"}, prelude)
    assert c["SO_RCVBUFFORCE"] == _socket.SO_RCVBUFFORCE
    assert c["CAP_NET_ADMIN"] == _socket.CAP_NET_ADMIN


def test_no_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(monkeypatch, oserror(errno.EPROTONOSUPPORT))
    with pytest.raises(NoConnectorError) as info:
        _socket.bound(4096)
    assert info.value.errno == errno.EPROTONOSUPPORT and isinstance(info.value.__cause__, OSError)
    assert str(info.value) == (
        "[Errno 93] NETLINK_CONNECTOR is not supported: no connector in this kernel (CONFIG_CONNECTOR),"
        " or an emulator (qemu-user) not passing it"
    )


def test_another_socket_failure_stays_an_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in(monkeypatch, oserror(errno.EMFILE))
    with pytest.raises(OSError) as info:
        _socket.bound(4096)
    assert info.value.errno == errno.EMFILE and not isinstance(info.value, KstructsError)


def test_bind_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake({"bind": oserror(errno.EPERM)})
    stand_in(monkeypatch, fake)
    with pytest.raises(PrivilegeError) as info:
        _socket.bound(4096)
    assert isinstance(info.value, PermissionError) and info.value.errno == errno.EPERM
    assert str(info.value) == (
        "[Errno 1] binding to the process events group needs CAP_NET_ADMIN on this kernel (before Linux 6.6)"
    )
    assert fake.closed


@pytest.mark.parametrize("where", ["setsockopt", "bind"])
def test_a_failure_after_socket_closes_it(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    fake = Fake({where: oserror(errno.ENOMEM)})
    stand_in(monkeypatch, fake)
    with pytest.raises(OSError) as info:
        _socket.bound(4096)
    assert info.value.errno == errno.ENOMEM and not isinstance(info.value, KstructsError)
    assert fake.closed


def test_an_interrupted_bind_closes_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake({"bind": KeyboardInterrupt()})  # a signal handler's exception
    stand_in(monkeypatch, fake)
    with pytest.raises(KeyboardInterrupt):
        _socket.bound(4096)
    assert fake.closed


def test_send() -> None:
    fake = Fake({})
    _socket.send(fake, b"request")  # type: ignore[arg-type]
    assert fake.calls == [("send", b"request")]


def test_send_refused_names_the_namespace() -> None:
    fake = Fake({"send": oserror(errno.ECONNREFUSED)})
    with pytest.raises(NamespaceError) as info:
        _socket.send(fake, b"request")  # type: ignore[arg-type]
    assert isinstance(info.value, ConnectionRefusedError) and info.value.errno == errno.ECONNREFUSED
    assert str(info.value) == (
        "[Errno 111] the process connector answers only in the initial network namespace (ECONNREFUSED)"
    )


def test_another_send_failure_stays_an_oserror() -> None:
    fake = Fake({"send": oserror(errno.ENOBUFS)})
    with pytest.raises(OSError) as info:
        _socket.send(fake, b"request")  # type: ignore[arg-type]
    assert info.value.errno == errno.ENOBUFS and not isinstance(info.value, KstructsError)


STATUS = "Name:\tpython3\nUmask:\t0022\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n"


@pytest.mark.parametrize(
    ("cap_eff", "expected"),
    [
        ("000001ffffffffff", True),  # root
        ("0000000000000000", False),  # nobody
        ("0000000000001000", True),  # CAP_NET_ADMIN (12) alone
        ("000001ffffffefff", False),  # everything but it
        ("", None),
        ("zz", None),
    ],
)
def test_cap_net_admin_in(cap_eff: str, expected: bool | None) -> None:
    lines = f"{STATUS}CapEff:\t{cap_eff}\nCapBnd:\t000001ffffffffff\n".splitlines(keepends=True)
    assert _socket.cap_net_admin_in(lines) is expected


def test_cap_net_admin_in_without_a_capeff_line() -> None:
    assert _socket.cap_net_admin_in(STATUS.splitlines(keepends=True)) is None
    assert _socket.cap_net_admin_in([]) is None


class cap_header(ctypes.Structure):  # struct __user_cap_header_struct, <linux/capability.h>
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class cap_data(ctypes.Structure):  # struct __user_cap_data_struct
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def effective_from_capget() -> int:
    """The calling thread's effective capabilities, from capget(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = cap_header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (cap_data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(data[0].effective) | int(data[1].effective) << 32


def test_cap_net_admin_is_what_capget_says() -> None:
    try:
        effective = effective_from_capget()
    except (OSError, AttributeError) as e:  # qemu-user may not pass capget() on
        pytest.skip(f"capget() is not available: {e}")
    assert _socket.cap_net_admin() is bool(effective >> 12 & 1)


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ("6.18.0-arch1-1", (6, 18)),
        ("6.1.0-13-amd64", (6, 1)),
        ("5.15.0", (5, 15)),
        ("6.6", (6, 6)),
        ("10.2-rc1", (10, 2)),
        ("4.19.325+", (4, 19)),
        ("6", None),
        ("6.", None),
        ("6.x", None),
        ("", None),
        ("v6.1", None),
    ],
)
def test_kernel_version_in(release: str, expected: tuple[int, int] | None) -> None:
    assert _socket.kernel_version_in(release) == expected


def test_kernel_version_is_what_uname_says() -> None:
    major, minor = subprocess.run(["uname", "-r"], capture_output=True, text=True, check=True).stdout.split(".")[:2]
    assert _socket.kernel_version() == (int(major), int("".join(c for c in minor if c.isdigit())))


@pytest.mark.root
def test_cap_net_admin_after_dropping_root() -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)  # clears the effective capabilities
            code = 0 if _socket.cap_net_admin() is False and not effective_from_capget() else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

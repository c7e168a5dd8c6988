"""Shared test fixtures: the library's C probe, asking the compiler for layout facts.

Layout truth comes from the C compiler and the installed kernel UAPI headers,
never from the binding itself. Without a compiler the probe cases skip with
a reason, except under CI (``CI`` set), where a missing compiler fails them.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kstructs.cn_proc import proc_event
from kstructs.conformance.cc import Query, evaluate
from kstructs.conformance.cc import compiler as cc_driver
from kstructs.connector import CN_IDX_PROC, CN_VAL_PROC, cb_id, cn_msg
from kstructs.errors import CheckError
from kstructs.netlink import NLMSG_DONE, nlmsg_length, nlmsghdr

HEADERS = ("linux/netlink.h", "linux/connector.h", "linux/cn_proc.h")

#: 32-bit x86: __u64 is 4-aligned, so C places a member declared aligned(8) where
#: ctypes cannot, on any Python (ctypes aligns whole structs, from 3.13, not members).
X86_32 = (
    ctypes.sizeof(ctypes.c_void_p) == 4
    and ctypes.alignment(ctypes.c_uint64) == 4
    and platform.machine() in {"i386", "i486", "i586", "i686", "x86_64"}
)
aligned_member = pytest.mark.xfail(
    X86_32, reason="32-bit x86: ctypes cannot align a __u64 member to 8 (aligned(8)), on any Python", strict=True
)
#: 32-bit x86 and CPython < 3.13 (no ``_align_``): struct proc_event is 4-aligned in
#: ctypes where C makes it 8 (see its docstring).
PROC_EVENT_UNDERALIGNED = X86_32 and sys.version_info < (3, 13)
PROC_EVENT_ALIGN_REASON = (
    "32-bit x86 and Python < 3.13: ctypes cannot give struct proc_event its C alignment of 8 "
    "(_align_ needs CPython 3.13), so a struct embedding it is laid out 4 bytes short"
)
#: For the tests that check a layout embedding or measuring proc_event's alignment.
proc_event_align = pytest.mark.xfail(PROC_EVENT_UNDERALIGNED, reason=PROC_EVENT_ALIGN_REASON, strict=True)


#: Hang guards (the timeouts that turn a wait that never ends into a failure) are
#: multiplied by this on a slow machine, an emulated CPU (tools/matrix sets it in its VM).
#: They bound waits only: no test asserts a speed.
TIMEOUT_SCALE = float(os.environ.get("KSTRUCTS_TEST_TIMEOUT_SCALE") or 1)
if not 1 <= TIMEOUT_SCALE < 1000:
    raise ValueError(f"KSTRUCTS_TEST_TIMEOUT_SCALE must be from 1 to 1000: {TIMEOUT_SCALE!r}")


def hang_guard(seconds: float) -> float:
    """A hang guard of ``seconds`` on this machine (times ``TIMEOUT_SCALE``)."""
    return seconds * TIMEOUT_SCALE


def compiler() -> str:
    """The C compiler to use, or skip (fail under CI) when there is none."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        if os.environ.get("CI"):
            pytest.fail("no C compiler: CI must install one (gcc) to check layouts")
        pytest.skip("no C compiler (set CC or install gcc)")
    return cc


@functools.cache
def _probe(exprs: tuple[tuple[str, str], ...], prelude: str) -> dict[str, int]:
    """The library's own compile-only probe (kstructs.conformance.cc), on the installed headers."""
    cc = compiler()
    try:
        done = evaluate(
            cc_driver(cc, defines=["_GNU_SOURCE"]),
            [*HEADERS, "linux/version.h"],
            [Query(key, expr) for key, expr in exprs],
            prelude=prelude,
        )
    except CheckError as e:
        if str(e).startswith("headers not found: linux/"):
            if os.environ.get("CI"):
                pytest.fail("kernel UAPI headers not installed: CI must install linux-libc-dev")
            pytest.skip("kernel UAPI headers not installed (linux-libc-dev)")
        raise AssertionError(f"C probe did not compile: {e}") from None
    if done.failed:
        raise AssertionError(f"C probe: these did not compile: {dict(done.failed)}")
    values: dict[str, int] = {}
    for (key, _), value in zip(exprs, done.values, strict=True):
        assert value is not None
        values[key] = value
    return values


def c_values(exprs: Mapping[str, str], prelude: str = "") -> dict[str, int]:
    """Evaluate integer C expressions against the installed headers, in one compile."""
    return _probe(tuple(sorted(exprs.items())), prelude)


@functools.cache
def header_version() -> tuple[int, int]:
    """The Linux version of the installed UAPI headers (LINUX_VERSION_CODE)."""
    code = c_values({"v": "LINUX_VERSION_CODE"})["v"]
    return code >> 16, (code >> 8) & 0xFF


def version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def since(item: str, added_in: Mapping[str, str]) -> tuple[str, str] | None:
    """The newest version recorded for an item or any item that contains it."""
    found: list[tuple[str, str]] = []
    parts = item.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in added_in:
            found.append((key, added_in[key]))
    return max(found, key=lambda kv: version(kv[1]), default=None)


def skip_if_newer(item: str, added_in: Mapping[str, str]) -> None:
    """Skip a compiler case for an item the installed headers predate."""
    newest = since(item, added_in)
    have = header_version()
    if newest is not None and version(newest[1]) > have:
        key, ver = newest
        pytest.skip(f"installed headers are Linux {have[0]}.{have[1]}; {key} arrived in Linux {ver}")


def present(items: Iterable[str], added_in: Mapping[str, str]) -> list[str]:
    """The items the installed headers are new enough to have."""
    have = header_version()
    return [i for i in items if (s := since(i, added_in)) is None or version(s[1]) <= have]


CType = type[ctypes.Structure] | type[ctypes.Union]


@dataclass(frozen=True)
class LayoutCase:
    """One layout fact of a binding class, with the C expression that states it."""

    item: str  # the C item, "struct proc_event.event_data.fork.parent_pid"
    what: str  # size, align, offset, length, signed
    python: int
    c_expr: str
    since_key: str  # the ADDED_IN key that governs this case

    @property
    def id(self) -> str:
        return f"{self.item}:{self.what}"


def _is_signed(simple: Any) -> int:
    return int(simple(-1).value < 0)


def _array(ftype: type[ctypes.Array[Any]]) -> tuple[Any, int]:
    """Element type and length of a ctypes array type."""
    info: dict[str, Any] = dict(vars(ftype))
    return info["_type_"], int(info["_length_"])


def layout_cases(types: Iterable[CType]) -> list[LayoutCase]:
    """Size and alignment of each class, and offset, size, signedness and
    array length of every field, nested members included."""
    cases: list[LayoutCase] = []
    for cls in types:
        tag = f"{'union' if issubclass(cls, ctypes.Union) else 'struct'} {cls.__name__}"
        cases.append(LayoutCase(tag, "size", ctypes.sizeof(cls), f"sizeof({tag})", tag))
        cases.append(LayoutCase(tag, "align", ctypes.alignment(cls), f"_Alignof({tag})", tag))
        _walk(cls, tag=tag, since_key=tag, path="", base=0, cases=cases)
    return cases


def _walk(cls: CType, *, tag: str, since_key: str, path: str, base: int, cases: list[LayoutCase]) -> None:
    for name, ftype, *_ in cls._fields_:
        member = f"{path}{name}"
        item = f"{tag}.{member}"
        key = f"{tag}.{name}" if not path else since_key
        lvalue = f"(({tag} *)0)->{member}"
        offset = base + getattr(cls, name).offset

        def add(what: str, python: int, c_expr: str, item: str = item, key: str = key) -> None:
            cases.append(LayoutCase(item, what, python, c_expr, key))

        add("offset", offset, f"offsetof({tag}, {member})")
        if issubclass(ftype, ctypes.Structure | ctypes.Union):
            add("size", ctypes.sizeof(ftype), f"sizeof({lvalue})")
            if "__" in ftype.__name__:
                # An anonymous member type (named parent__member): walk into it.
                _walk(ftype, tag=tag, since_key=key, path=f"{member}.", base=offset, cases=cases)
            else:
                # A named member struct: its own fields are checked under its own tag.
                compatible = f"__builtin_types_compatible_p(__typeof__({lvalue}), struct {ftype.__name__})"
                add("type", 1, compatible)
        elif issubclass(ftype, ctypes.Array):
            elem, length = _array(ftype)
            if length:  # sizeof does not apply to a flexible array member
                add("size", ctypes.sizeof(ftype), f"sizeof({lvalue})")
                add("length", length, f"sizeof({lvalue}) / sizeof({lvalue}[0])")
            if elem is not ctypes.c_char:  # plain char: signedness is the platform's
                add("signed", _is_signed(elem), f"(__typeof__({lvalue}[0]))-1 < 0")
        else:
            add("size", ctypes.sizeof(ftype), f"sizeof({lvalue})")
            add("signed", _is_signed(ftype), f"(__typeof__({lvalue}))-1 < 0")


def installed(header: str) -> Path:
    """The installed header the compiler finds for ``#include <header>``."""
    cc = compiler()
    done = subprocess.run(
        [cc, "-E", "-x", "c", "-"], input=f"#include <{header}>\n", capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip("kernel UAPI headers not installed (linux-libc-dev)")
    paths = re.findall(r'^# \d+ "([^"]+)"', done.stdout, re.MULTILINE)
    return Path(next(p for p in paths if p.endswith("/" + header)))


def tree(root: Path, header: str, pattern: str, replacement: str) -> Path:
    """A header tree under ``root`` with one installed header changed once."""
    text, count = re.subn(pattern, replacement, installed(header).read_text(), count=1)
    assert count == 1, f"{pattern!r} not found in the installed {header}"
    (root / header).parent.mkdir(parents=True, exist_ok=True)
    (root / header).write_text(text)
    return root


def native_order(fields: str) -> bytes:
    """Little-endian hex, one space-separated group per field, in the host's byte order:
    a big-endian kernel sends each field byte-reversed."""
    return b"".join(f if sys.byteorder == "little" else f[::-1] for f in map(bytes.fromhex, fields.split()))


def datagram(
    what: int,
    member: str | None = None,
    payload: ctypes.Structure | None = None,
    *,
    cpu: int = 1,
    timestamp_ns: int = 0x0102030405060708,
    seq: int = 77,
    ack: int = 0,
    cn_len: int | None = None,
    nl_type: int = NLMSG_DONE,
    idx: int = CN_IDX_PROC,
    val: int = CN_VAL_PROC,
    **fields: Any,
) -> bytes:
    """What the kernel sends (nlmsghdr + cn_msg + proc_event), assembled from
    the ctypes layouts, which the compiler checks, never from the parser's
    Structs. ``payload`` is the ``event_data`` member, or ``fields`` name its
    fields."""
    ev = proc_event(what=what, cpu=cpu, timestamp_ns=timestamp_ns)
    if member is not None and payload is not None:
        setattr(ev.event_data, member, payload)
    elif member is not None:
        target = getattr(ev.event_data, member)
        for name, value in fields.items():
            setattr(target, name, value)
    raw = bytes(ev)
    length = ctypes.sizeof(proc_event) if cn_len is None else cn_len
    raw = raw[:length] + bytes(max(0, length - len(raw)))
    cn = cn_msg(id=cb_id(idx=idx, val=val), seq=seq, ack=ack, len=length, flags=0)
    body = bytes(cn) + raw
    nl = nlmsghdr(nlmsg_len=nlmsg_length(len(body)), nlmsg_type=nl_type, nlmsg_flags=0, nlmsg_seq=seq)
    return bytes(nl) + body


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``root`` talk to the kernel's process connector: skip them, with
    the reason, when not root."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (CAP_NET_ADMIN) to listen to process events")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)

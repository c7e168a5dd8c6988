"""The parser fuzzer: generated and mutated datagrams through ``parse_events``.

Every input starts from valid datagrams of every kind, built from the
kstructs ctypes layouts (each proc_event kind, the LISTEN ack, an unknown
kind, NLMSG_ERROR/NOOP/OVERRUN messages, another connector id), and is then
mutated: bit flips, bytes set to boundary values, truncation, extension,
corrupted ``nlmsg_len``/``cn_msg.len``/``nlmsg_type``/``what``, several
messages concatenated (aligned or not), splices of two inputs, or plain
random bytes. Each input goes through ``kstructs.events.parse_events`` as
``bytes``, and one in eight also as another kind of buffer (2-D, strided,
wide-format memoryviews, bytearray): it must parse to the same result.

``ParseError`` is the expected way to refuse input. Another exception, or a
buffer that parses differently from its bytes, is foreign. Run through
``bench/fuzz.py parser``.
"""

from __future__ import annotations

import ctypes
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import _common

from kstructs import cn_proc, connector, netlink

HDR = ctypes.sizeof(netlink.nlmsghdr)
CN = ctypes.sizeof(connector.cn_msg)
NLMSG_LEN_AT = netlink.nlmsghdr.nlmsg_len.offset
NLMSG_TYPE_AT = netlink.nlmsghdr.nlmsg_type.offset
CN_LEN_AT = HDR + connector.cn_msg.len.offset
CN_IDX_AT = HDR + connector.cn_msg.id.offset
WHAT_AT = HDR + CN + cn_proc.proc_event.what.offset

U32_EDGES: tuple[int, ...] = (
    0,
    1,
    2,
    3,
    4,
    15,
    16,
    17,
    20,
    35,
    36,
    37,
    40,
    52,
    56,
    60,
    75,
    76,
    77,
    80,
    0x7FFF,
    0xFFFF,
    0x10000,
)
U32_EDGES += (0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
BYTE_EDGES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
KINDS = (
    cn_proc.PROC_EVENT_NONE,
    cn_proc.PROC_EVENT_FORK,
    cn_proc.PROC_EVENT_EXEC,
    cn_proc.PROC_EVENT_UID,
    cn_proc.PROC_EVENT_GID,
    cn_proc.PROC_EVENT_SID,
    cn_proc.PROC_EVENT_PTRACE,
    cn_proc.PROC_EVENT_COMM,
    cn_proc.PROC_EVENT_NONZERO_EXIT,
    cn_proc.PROC_EVENT_COREDUMP,
    cn_proc.PROC_EVENT_EXIT,
)


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def i32(self) -> int:
        r = self.rng
        return r.choice((0, 1, -1, 2**31 - 1, -(2**31), r.randrange(-(2**31), 2**31), r.randrange(1, 4_194_304)))

    def u32(self) -> int:
        r = self.rng
        return r.choice((0, 1, 2**32 - 1, r.randrange(2**32), r.randrange(256)))

    def event(self) -> bytes:
        """One valid proc_event datagram of a random kind."""
        r, i, u = self.rng, self.i32, self.u32
        what = r.choice((*KINDS, r.randrange(2**32), 1 << r.randrange(32)))
        payload: ctypes.Structure | None
        member: str | None
        if what == cn_proc.PROC_EVENT_FORK:
            member, payload = "fork", cn_proc.fork_proc_event(i(), i(), i(), i())
        elif what == cn_proc.PROC_EVENT_EXEC:
            member, payload = "exec", cn_proc.exec_proc_event(i(), i())
        elif what in (cn_proc.PROC_EVENT_UID, cn_proc.PROC_EVENT_GID):
            ev = cn_proc.id_proc_event(process_pid=i(), process_tgid=i())
            ev.r.ruid, ev.e.euid = u(), u()
            member, payload = "id", ev
        elif what == cn_proc.PROC_EVENT_SID:
            member, payload = "sid", cn_proc.sid_proc_event(i(), i())
        elif what == cn_proc.PROC_EVENT_PTRACE:
            member, payload = "ptrace", cn_proc.ptrace_proc_event(i(), i(), i(), i())
        elif what == cn_proc.PROC_EVENT_COMM:
            comm = bytes(r.randrange(256) for _ in range(r.randrange(17)))
            member, payload = "comm", cn_proc.comm_proc_event(i(), i(), comm)
        elif what == cn_proc.PROC_EVENT_COREDUMP:
            member, payload = "coredump", cn_proc.coredump_proc_event(i(), i(), i(), i())
        elif what in (cn_proc.PROC_EVENT_EXIT, cn_proc.PROC_EVENT_NONZERO_EXIT):
            member, payload = "exit", cn_proc.exit_proc_event(i(), i(), u(), u(), i(), i())
        elif what == cn_proc.PROC_EVENT_NONE:
            member, payload = "ack", cn_proc.proc_event__ack(r.choice((0, 22, 105, u())))
        else:
            member, payload = None, None
        return _common.datagram(
            what,
            member,
            payload,
            cpu=r.choice((0, 1, r.randrange(4096), u())),
            seq=u(),
            ack=r.choice((0, 0, 1, u())),
            timestamp_ns=r.randrange(2**64),
            nlmsg_pid=r.choice((0, 0, 0, u())),
        )

    def other(self) -> bytes:
        """A valid netlink message that is not a process event."""
        r = self.rng
        kind = r.randrange(4)
        if kind == 0:  # NLMSG_ERROR: an ack or an error, with the offending header
            err = netlink.nlmsgerr(error=r.choice((0, -1, -22, -105, r.randrange(-(2**31), 2**31))))
            body = bytes(err)
            hdr = netlink.nlmsghdr(nlmsg_len=HDR + len(body), nlmsg_type=netlink.NLMSG_ERROR)
            return bytes(hdr) + body
        if kind == 1:  # NLMSG_NOOP / NLMSG_OVERRUN / a type >= NLMSG_MIN_TYPE, header only
            t = r.choice((netlink.NLMSG_NOOP, netlink.NLMSG_OVERRUN, netlink.NLMSG_MIN_TYPE, r.randrange(2**16)))
            return bytes(netlink.nlmsghdr(nlmsg_len=HDR, nlmsg_type=t))
        data = bytearray(self.event())  # another connector's id
        idx = r.choice((connector.CN_W1_IDX, connector.CN_IDX_CIFS, r.randrange(2**32)))
        data[CN_IDX_AT : CN_IDX_AT + 4] = idx.to_bytes(4, sys.byteorder)
        return bytes(data)

    def valid(self) -> bytes:
        return self.event() if self.rng.random() < 0.85 else self.other()

    # ------------------------------------------------------------ mutations

    def put32(self, data: bytearray, at: int, value: int) -> None:
        if at + 4 <= len(data):
            data[at : at + 4] = (value & 0xFFFFFFFF).to_bytes(4, sys.byteorder)

    def edge32(self, data: bytearray) -> int:
        r = self.rng
        return r.choice((*U32_EDGES, len(data) + r.randrange(-8, 9), r.randrange(2**32)))

    def m_none(self) -> bytes:
        return self.valid()

    def m_bitflip(self) -> bytes:
        data = bytearray(self.valid())
        for _ in range(self.rng.randrange(1, 9)):
            bit = self.rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)

    def m_bytes(self) -> bytes:
        data = bytearray(self.valid())
        for _ in range(self.rng.randrange(1, 5)):
            data[self.rng.randrange(len(data))] = self.rng.choice(BYTE_EDGES)
        return bytes(data)

    def m_truncate(self) -> bytes:
        data = self.valid()
        return data[: self.rng.randrange(len(data))]

    def m_extend(self) -> bytes:
        r = self.rng
        return self.valid() + bytes(r.randrange(256) for _ in range(r.randrange(1, 65)))

    def m_nlmsg_len(self) -> bytes:
        data = bytearray(self.valid())
        self.put32(data, NLMSG_LEN_AT, self.edge32(data))
        return bytes(data)

    def m_cn_len(self) -> bytes:
        data = bytearray(self.valid())
        if len(data) >= CN_LEN_AT + 2:
            value = self.rng.choice((0, 1, 4, 16, 39, 40, 41, 0xFFFF, self.rng.randrange(2**16)))
            data[CN_LEN_AT : CN_LEN_AT + 2] = value.to_bytes(2, sys.byteorder)
        return bytes(data)

    def m_nlmsg_type(self) -> bytes:
        data = bytearray(self.event())
        value = self.rng.choice((0, 1, 2, 3, 4, 15, 16, 0xFFFF, self.rng.randrange(2**16)))
        data[NLMSG_TYPE_AT : NLMSG_TYPE_AT + 2] = value.to_bytes(2, sys.byteorder)
        return bytes(data)

    def m_what(self) -> bytes:
        data = bytearray(self.event())
        self.put32(data, WHAT_AT, self.rng.choice((self.rng.randrange(2**32), 1 << self.rng.randrange(32))))
        return bytes(data)

    def m_concat(self) -> bytes:
        r = self.rng
        parts = [self.valid() for _ in range(r.randrange(2, 6))]
        if r.random() < 0.3:  # unaligned: a stray byte or two between messages
            parts = [p + bytes(r.randrange(1, 4)) for p in parts]
        if r.random() < 0.3:
            mutate = r.choice((self.m_bitflip, self.m_nlmsg_len, self.m_truncate, self.m_cn_len))
            parts[r.randrange(len(parts))] = mutate()
        return b"".join(parts)

    def m_many(self) -> bytes:
        return self.valid() * self.rng.randrange(50, 200)

    def m_splice(self) -> bytes:
        a, b = self.valid(), self.valid()
        return a[: self.rng.randrange(len(a) + 1)] + b[self.rng.randrange(len(b) + 1) :]

    def m_random(self) -> bytes:
        r = self.rng
        return bytes(r.randrange(256) for _ in range(r.choice((0, 1, 15, 16, 36, 52, 76, r.randrange(200)))))

    def mutations(self) -> list[tuple[str, Callable[[], bytes], int]]:
        """Name, mutator and weight."""
        return [
            ("valid", self.m_none, 10),
            ("bit flips", self.m_bitflip, 20),
            ("boundary bytes", self.m_bytes, 10),
            ("truncated", self.m_truncate, 10),
            ("extended", self.m_extend, 5),
            ("nlmsg_len", self.m_nlmsg_len, 10),
            ("cn_msg.len", self.m_cn_len, 8),
            ("nlmsg_type", self.m_nlmsg_type, 5),
            ("what", self.m_what, 5),
            ("concatenated", self.m_concat, 10),
            ("many messages", self.m_many, 1),
            ("spliced", self.m_splice, 4),
            ("random bytes", self.m_random, 2),
        ]


def views(data: bytes, rng: random.Random) -> list[object]:
    """The same bytes as other buffers: what parse_events must read alike."""
    n = len(data)
    out: list[object] = [bytearray(data)]
    room = bytearray(2 * n)
    room[::2] = data
    out.append(memoryview(room)[::2])
    for rows in (2, 4, 19):
        if n and n % rows == 0:
            out.append(memoryview(data).cast("B", (rows, n // rows)))
            out.append(memoryview(data).cast("B", (n // rows, rows)))
    if n and n % 4 == 0:
        out.append(memoryview(data).cast("I"))
    return [rng.choice(out)]


def _outcome(parse: Callable[[Any], object], data: object) -> object:
    from kstructs.errors import ParseError

    try:
        return parse(data)
    except ParseError as e:
        return ("ParseError", str(e))


def fuzz(count: int, seconds: float, seed: int) -> dict[str, object]:
    """Try up to ``count`` inputs for at most ``seconds``; return the totals:
    inputs tried, seconds, foreign exceptions (and disagreements), and the
    slowest input (its time and hex)."""
    from kstructs.errors import ParseError
    from kstructs.events import parse_events

    gen = Generator(seed)
    table = gen.mutations()
    makers = [m for _, m, _ in table]
    weights = [w for _, _, w in table]
    tried = foreign = 0
    findings: list[str] = []
    slowest = (0.0, b"")
    start = time.perf_counter()
    deadline = start + seconds
    while tried < count and time.perf_counter() < deadline:
        for make in gen.rng.choices(makers, weights, k=min(500, count - tried)):
            data = make()
            tried += 1
            t0 = time.perf_counter()
            try:
                parse_events(data)
            except ParseError:
                pass
            except Exception as e:  # a foreign exception: the finding
                foreign += 1
                if len(findings) < 10:
                    findings.append(f"{type(e).__name__}: {e} on {data.hex()}")
            took = time.perf_counter() - t0
            if took > slowest[0]:
                slowest = (took, data)
            if tried % 8 == 0:
                expected = _outcome(parse_events, data)
                for view in views(data, gen.rng):
                    try:
                        got = _outcome(parse_events, view)
                    except Exception as e:
                        got = f"{type(e).__name__}: {e}"
                    if got != expected:
                        foreign += 1
                        if len(findings) < 10:
                            findings.append(f"a {type(view).__name__} parses differently from {data.hex()}")
    return {
        "target": "parser",
        "inputs": tried,
        "seconds": time.perf_counter() - start,
        "foreign": foreign,
        "slowest_s": slowest[0],
        "slowest": f"{len(slowest[1])} bytes: {slowest[1][:32].hex()}",
        "findings": findings,
    }


if __name__ == "__main__":
    result = fuzz(20_000, 60.0, 0)
    print(result)
    sys.exit(1 if result["foreign"] else 0)

#!/usr/bin/env python3
"""Fuzz the header checker: hostile header trees and hostile compilers.

    python bench/fuzz_headers.py [--count N] [--seconds S] [--seed SEED]

Each input is one ``check_headers`` of the kstructs binding against a copy
of the installed UAPI headers with a few mutations (lines dropped, doubled or
swapped, bytes flipped to odd or non-UTF-8 values, numbers changed, junk
tokens, deep nesting, a division by zero, an ``#error``, a self-include, a
constructor that prints, an odd ``LINUX_VERSION_CODE``), or through a
compiler wrapper that misbehaves (junk on stdout or stderr, fake diagnostics,
no output, a crash, a random or truncated or bit-flipped object file, forged
probe sections, a junk preprocessed file). The check may find mismatches or
raise ``CheckError``; any other exception is *foreign* and a bug. Prints a
one-row table: inputs, seconds, foreign exceptions, the slowest input.
``bench/fuzz.py`` runs ``fuzz()`` with the other fuzzers.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

from kstructs import cn_proc, connector, netlink
from kstructs.conformance import Binding, CheckError, check_headers
from kstructs.conformance.cc import Compiler

HEADERS = ("linux/netlink.h", "linux/connector.h", "linux/cn_proc.h")
TIMEOUT = 5.0  # seconds per compiler run: the hanging wrapper is cut at this

# The misbehaving compiler: python3 WRAPPER MODE SEED REAL-CC ARGS...
WRAPPER = r"""
import os, random, signal, subprocess, sys
mode, seed, real, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
rng = random.Random(seed)
out = args[args.index("-o") + 1] if "-o" in args else None
preprocess = "-E" in args

def junk(n):
    return bytes(rng.choice(b"\x00\x1b\xff\xfe\n :0123456789abcdef#\"'\\{}()") for _ in range(n))

def real_cc():
    return subprocess.run([real, *args]).returncode

if mode == "stdout":
    sys.stdout.buffer.write(junk(rng.randrange(1, 4000)))
    sys.stdout.flush()
    sys.exit(real_cc())
if mode == "stderr":
    lines = [b"probe.c:%d:%d: error: %s" % (rng.randrange(0, 2000), rng.randrange(1, 9), junk(20)) for _ in range(20)]
    sys.stderr.buffer.write(b"\n".join(lines) + junk(50))
    sys.exit(rng.choice([0, 1]))
if mode == "nothing":
    sys.exit(0)
if mode == "crash":
    os.kill(os.getpid(), rng.choice([signal.SIGSEGV, signal.SIGABRT, signal.SIGKILL]))
if mode == "hang":
    import time
    time.sleep(60)
if mode == "random-object" and not preprocess and out:
    open(out, "wb").write(rng.choice([b"\x7fELF", b""]) + junk(rng.randrange(0, 5000)))
    sys.exit(0)
if mode == "preprocessed-junk" and preprocess and out:
    lines = []
    for _ in range(rng.randrange(1, 300)):
        kind = rng.randrange(5)
        if kind == 0:
            lines.append(b'# 1 "' + junk(10) + b'/linux/connector.h"')
        elif kind == 1:
            lines.append(b"#define " + rng.choice([b"LINUX_VERSION_CODE", b"CN_X", b"A("]) + b" " + junk(8))
        elif kind == 2:
            lines.append(b"#undef" + junk(3))
        else:
            lines.append(junk(rng.randrange(0, 80)))
    open(out, "wb").write(b"\n".join(lines))
    sys.exit(0)
code = real_cc()
if code or not out or preprocess or not os.path.exists(out):
    sys.exit(code)
data = bytearray(open(out, "rb").read())
if mode == "truncate":
    del data[rng.randrange(0, len(data)):]
elif mode == "flip":
    for _ in range(rng.randrange(1, 20)):
        data[rng.randrange(len(data))] = rng.randrange(256)
elif mode == "section":
    # forge the probe's own section: find its magic and change what follows
    for magic in (bytes.fromhex("73746375727473 6b".replace(" ", "")), bytes.fromhex("6b73747275637473")):
        at = data.find(magic)
        if at >= 0:
            for _ in range(rng.randrange(1, 4)):
                data[at + rng.randrange(0, 64)] = rng.randrange(256)
elif mode == "shrink":
    # shrink a section header's size field somewhere in the section table
    for _ in range(3):
        data[rng.randrange(max(1, len(data) - 512), len(data))] = 0
open(out, "wb").write(bytes(data))
sys.exit(0)
"""
COMPILER_MODES = (
    "stdout",
    "stderr",
    "nothing",
    "crash",
    "random-object",
    "preprocessed-junk",
    "truncate",
    "flip",
    "section",
    "shrink",
)


def _installed(header: str, cc: str) -> bytes:
    import subprocess

    done = subprocess.run(
        [cc, "-E", "-x", "c", "-"], input=f"#include <{header}>\n".encode(), capture_output=True, check=True
    )
    for line in done.stdout.decode(errors="replace").splitlines():
        if line.startswith("# ") and line.rstrip().split('"')[1:2] and line.split('"')[1].endswith("/" + header):
            return Path(line.split('"')[1]).read_bytes()
    raise SystemExit(f"fuzz_headers: {header} not installed")


# --- header mutations: each takes the text and the generator


def _lines(f: Callable[[list[bytes], random.Random], None]) -> Callable[[bytes, random.Random], bytes]:
    def mutate(text: bytes, rng: random.Random) -> bytes:
        lines = text.split(b"\n")
        if lines:
            f(lines, rng)
        return b"\n".join(lines)

    mutate.__name__ = f.__name__
    return mutate


@_lines
def _drop(lines: list[bytes], rng: random.Random) -> None:
    del lines[rng.randrange(len(lines))]


@_lines
def _double(lines: list[bytes], rng: random.Random) -> None:
    at = rng.randrange(len(lines))
    lines.insert(at, lines[at])


@_lines
def _swap(lines: list[bytes], rng: random.Random) -> None:
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[a], lines[b] = lines[b], lines[a]


def _flip(text: bytes, rng: random.Random) -> bytes:
    data = bytearray(text)
    for _ in range(rng.randrange(1, 8)):
        data[rng.randrange(len(data))] = rng.choice([0x00, 0x1B, 0x80, 0xC3, 0xFE, 0xFF, *b"{}();,\"'\\#*/0123456789"])
    return bytes(data)


def _numbers(text: bytes, rng: random.Random) -> bytes:
    import re

    values = [b"0", b"-1", b"1/0", b"0x7fffffffffffffffffff", b"99999999999999999999999", b"(1<<70)", b"2147483648"]
    return re.sub(rb"\b\d+\b", lambda m: rng.choice(values) if rng.random() < 0.1 else m[0], text)


def _insert(index: int, snippet: Callable[[random.Random], bytes]) -> Callable[[bytes, random.Random], bytes]:
    def mutate(text: bytes, rng: random.Random) -> bytes:
        at = text.rfind(b"#endif")
        at = rng.randrange(len(text)) if at < 0 or rng.random() < 0.3 else at
        return text[:at] + b"\n" + snippet(rng) + b"\n" + text[at:]

    mutate.__name__ = f"insert{index}"
    return mutate


_SNIPPETS: tuple[Callable[[random.Random], bytes], ...] = (
    lambda rng: b"#define CN_FUZZ_DIV (1/0)",
    lambda rng: b'#define CN_FUZZ_STR "\xff\xfe\x1b[2J"',
    lambda rng: b"#error fuzz \xff\x1b]0;title\x07",
    lambda rng: b"#include <linux/connector.h>\n#undef __CONNECTOR_H\n#include <linux/connector.h>",
    lambda rng: b"struct cn_fuzz_deep {" + b" struct {" * rng.randrange(1, 400) + b" int x;" + b" } a;" * 3 + b"};",
    lambda rng: b'#include <stdio.h>\n__attribute__((constructor)) static void cn_fuzz_noise(void) { puts("1 0"); }',
    lambda rng: b"enum { CN_FUZZ_A = " + str(rng.randrange(-(1 << 40), 1 << 40)).encode() + b", CN_FUZZ_B };",
    lambda rng: b"#define CN_FUZZ_MACRO(x) ((x) / ((x) - " + str(rng.randrange(0, 70)).encode() + b"))",
    lambda rng: b"static inline int cn_fuzz_fn(int x) { return 1 / (x - 3); }",
    lambda rng: bytes(rng.choice(b"{}()[];,\"'\\#/* \n\xff") for _ in range(rng.randrange(1, 60))),
    lambda rng: (
        b'static const unsigned long long cn_fuzz_forged[] __attribute__((section(".kstructs_probe"), used))'
        b" = { 0x6b73747275637473ULL, 1, 2 };"
    ),
)
_MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    _drop,
    _double,
    _swap,
    _flip,
    _numbers,
    *(_insert(i, s) for i, s in enumerate(_SNIPPETS)),
)
_VERSIONS = (b"\xc2\xb2", b"393472", b"-1", b"99999999999999999999", b"0x60100", b"\xff", b"", b"(6 << 16)")


def fuzz(count: int, seconds: float, seed: int) -> dict[str, object]:
    """Run up to ``count`` inputs for at most ``seconds``; what happened."""
    rng = random.Random(seed)
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("fuzz_headers: no C compiler")
    originals = {h: _installed(h, cc) for h in HEADERS}
    bindings = [Binding.from_module(m) for m in (netlink, connector, cn_proc)]
    inputs = foreign = 0
    slowest_s, slowest = 0.0, ""
    first_foreign = ""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kstructs-fuzz-") as tmp:
        wrapper = Path(tmp, "wrapper.py")
        wrapper.write_text(WRAPPER)
        while inputs < count and time.monotonic() - start < seconds:
            inputs += 1
            root = Path(tmp, f"in{inputs}")
            if rng.random() < 0.2:
                root = Path(os.fsdecode(bytes(root) + b"-\xff\x1b"))  # an odd directory name
            compiler = Compiler((cc,), timeout=TIMEOUT)
            what: str
            if rng.random() < 0.35:
                mode = rng.choice(COMPILER_MODES)
                compiler = Compiler(
                    (sys.executable, str(wrapper), mode, str(rng.randrange(1 << 30)), cc), timeout=TIMEOUT
                )
                what = f"compiler {mode}"
                root.mkdir(parents=True)
            else:
                header = rng.choice(HEADERS)
                text = originals[header]
                names = []
                for _ in range(rng.randrange(1, 4)):
                    mutation = rng.choice(_MUTATIONS)
                    names.append(mutation.__name__.lstrip("_"))
                    text = mutation(text, rng)
                (root / header).parent.mkdir(parents=True, exist_ok=True)
                (root / header).write_bytes(text)
                what = f"{header}: {', '.join(names)}"
                if rng.random() < 0.2:
                    version = rng.choice(_VERSIONS)
                    (root / "linux/version.h").write_bytes(b"#define LINUX_VERSION_CODE " + version + b"\n")
                    what += f"; LINUX_VERSION_CODE {version!r}"
            began = time.monotonic()
            try:
                check_headers(bindings, include_dirs=[root], cc=compiler)
            except CheckError:
                pass
            except Exception:  # a foreign exception: the bug this looks for
                foreign += 1
                if not first_foreign:
                    first_foreign = f"{what}: {traceback.format_exc(limit=3)}"
            took = time.monotonic() - began
            if took > slowest_s:
                slowest_s, slowest = took, what
            shutil.rmtree(root, ignore_errors=True)
    result: dict[str, object] = {
        "target": "headers",
        "inputs": inputs,
        "seconds": round(time.monotonic() - start, 2),
        "foreign": foreign,
        "slowest_s": round(slowest_s, 3),
        "slowest": slowest,
    }
    if first_foreign:
        result["first_foreign"] = first_foreign
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    r = fuzz(args.count, args.seconds, args.seed)
    headers = ["target", "inputs", "seconds", "foreign", "slowest s", "slowest input"]
    print(
        _common.table(headers, [[r["target"], r["inputs"], r["seconds"], r["foreign"], r["slowest_s"], r["slowest"]]])
    )
    if "first_foreign" in r:
        print(f"\nfirst foreign exception:\n{r['first_foreign']}")
    print(f"\n{_common.machine()}")
    return 1 if r["foreign"] else 0


if __name__ == "__main__":
    sys.exit(main())

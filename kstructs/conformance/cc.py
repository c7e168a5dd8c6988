"""The C compiler driver: which compiler, running it, and the compile-only probe.

``compiler()`` picks the compiler (``--cc``, ``--target TRIPLE``, ``$CC``, or
cc/gcc/clang on ``PATH``) and returns a ``Compiler``: its argv, the flags every
run gets (``-D``), and the time a run may take. ``Compiler.run`` runs it in a
process group of its own (a compiler that hangs is killed with all its
children), with its output captured to bounded files and decoded with
replacement, in the C locale.

``evaluate()`` is the probe: it asks the compiler for the values of integer
constant expressions (``sizeof``, ``offsetof``, ``_Alignof``, constants,
macro calls), each tagged with the item it belongs to. Nothing is run: the
values become static arrays in a section of an object file (``-c``), framed
by a magic, a per-run nonce and a count that only the probe writes, and are
read back with the ELF reader in the object's byte order — so a
cross-compiler's values are that target's, and a header that prints, or a
compiler that writes junk, cannot pass for values. An expression the compiler
cannot use as a static initializer (a static inline function call) is asked
again as an ``asm`` operand at ``-O2``, in a function of its own. A compile
error is attributed to the item whose line caused it; that item fails with
the compiler's message, and the rest is compiled again (``MAX_ROUNDS``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from kstructs.conformance.model import _Fact
from kstructs.conformance.probe import FOLD_SECTION, SECTION, Query, _join, _program, _text, _usable, _values
from kstructs.errors import CheckError

__all__ = [
    "DEFAULT_TIMEOUT",
    "FOLD_SECTION",
    "SECTION",
    "MAX_ROUNDS",
    "Abi",
    "Compiler",
    "Evaluation",
    "Group",
    "Query",
    "compiler",
    "evaluate",
    "evaluate_groups",
    "host_abi",
    "include_paths",
    "target_abi",
    "workdir",
]

DEFAULT_TIMEOUT: Final = 60.0  # seconds one compiler run may take (--cc-timeout)
MAX_ROUNDS: Final = 20  # compiles of one probe before giving up on removing failed items
MAX_DIAGNOSTICS: Final = 4 << 20  # bytes of the compiler's messages read
MAX_OUTPUT: Final = 64 << 20  # bytes of an object file read
MAX_PREPROCESSED: Final = 16 << 20  # bytes of preprocessed headers: the compiler is stopped past that
MAX_MESSAGES: Final = 64 << 20  # bytes of messages a compiler may write before it is stopped
_POLL: Final = 0.05  # seconds between looks at a running compiler's output

_CC_NAMES: Final = ("cc", "gcc", "clang")
# The Debian architecture of a triple's first part, for the names of its -cross packages.
DEBIAN_ARCH: Final = {
    "x86_64": "amd64",
    "i686": "i386",
    "i386": "i386",
    "aarch64": "arm64",
    "arm": "armhf",
    "s390x": "s390x",
    "powerpc64le": "ppc64el",
    "riscv64": "riscv64",
}
_TRIPLE = re.compile(r"[A-Za-z0-9_]+(?:-[A-Za-z0-9_.]+){1,4}")


# ---------------------------------------------------------------------------
# The compiler.


@dataclass(frozen=True)
class Compiler:
    """A C compiler command: its argv, the flags every run gets, and the time one run may take."""

    argv: tuple[str, ...]
    flags: tuple[str, ...] = ()  # -D definitions, before any other argument
    target: str | None = None  # the GNU triple asked for with --target
    timeout: float = DEFAULT_TIMEOUT

    @property
    def name(self) -> str:
        return _text(self.argv[0])

    def headers_not_found(self, header: str) -> str:
        """The message for a header the compiler cannot find, with the package to install for a target."""
        message = f"headers not found: {_text(header)}"
        if self.target is not None:
            arch = DEBIAN_ARCH.get(self.target.split("-", 1)[0], "ARCH")
            message += f" (for {self.target}, Debian: libc6-dev-{arch}-cross and linux-libc-dev-{arch}-cross)"
        return message

    def run(
        self, args: Sequence[str], what: str, cwd: Path, *, output: Path | None = None, limit: int = MAX_OUTPUT
    ) -> Ran:
        """Run the compiler with ``args`` in ``cwd``; its messages (stdout and stderr) are kept.
        It is killed (CheckError) when ``output`` grows past ``limit`` bytes."""
        return _run(
            [*self.argv, *self.flags, *args], f"{what} {self.name}", cwd, self.timeout, output=output, limit=limit
        )


def compiler(
    cc: str | Compiler | None = None,
    *,
    target: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    defines: Sequence[str] = (),
) -> Compiler:
    """The compiler to use: ``cc`` (any command line), else ``TRIPLE-gcc`` for
    ``target``, else ``$CC``, else the first of cc, gcc, clang on ``PATH``.
    ``defines`` are ``NAME`` or ``NAME=VALUE``, passed as ``-D``."""
    if isinstance(cc, Compiler):
        return cc
    if not timeout > 0 or timeout == float("inf"):
        raise CheckError(f"the compiler timeout must be a positive number of seconds, not {timeout!r}")
    if target is not None and _TRIPLE.fullmatch(target) is None:
        raise CheckError(f"not a target triple: {_text(target)!r}")
    source = "--cc"
    spec = cc
    if not spec and target is not None:
        spec, source = f"{target}-gcc", "--target"
    if not spec and (env := os.environ.get("CC")):
        spec, source = env, "$CC"
    if not spec:
        spec = next((c for c in _CC_NAMES if shutil.which(c)), None)
        if spec is None:
            raise CheckError("no C compiler: pass --cc or set CC, or install gcc")
    try:
        argv = shlex.split(spec)
    except ValueError as e:
        raise CheckError(f"cannot read the compiler command ({source}) {_text(spec)!r}: {e}") from None
    if not argv or shutil.which(argv[0]) is None:
        if source == "--target":
            raise CheckError(f"no C compiler for {target}: {spec!r} not found (Debian: gcc-{target})")
        raise CheckError(f"no C compiler: {_text(spec)!r} not found")
    return Compiler(tuple(argv), _defines(defines), target, float(timeout))


def _defines(defines: Sequence[str]) -> tuple[str, ...]:
    """``-D`` flags for ``NAME`` or ``NAME=VALUE`` definitions."""
    flags: list[str] = []
    for d in defines:
        name = d.split("=", 1)[0]
        if re.fullmatch(r"[A-Za-z_]\w*", name) is None or "\n" in d or "\0" in d:
            raise CheckError(f"not a macro definition: {_text(d)!r}")
        flags.append(f"-D{d}")
    return tuple(flags)


def include_paths(dirs: Sequence[str | Path]) -> list[Path]:
    """The include directories, resolved; each must be a directory."""
    paths: list[Path] = []
    for d in dirs:
        try:
            path = Path(d).resolve(strict=True)
        except RuntimeError:  # Python 3.11 and 3.12 on a symlink loop
            raise CheckError(f"include directory not usable: {_text(d)}: symlink loop") from None
        except OSError as e:
            if e.errno == 40:  # ELOOP
                raise CheckError(f"include directory not usable: {_text(d)}: symlink loop") from None
            raise CheckError(f"include directory not found: {_text(Path(d).absolute())}") from None
        if not path.is_dir():
            raise CheckError(f"include directory not found: {_text(path)}")
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Ran:
    """A finished compiler run: its exit status and its messages, decoded with replacement."""

    returncode: int
    output: str  # stdout and stderr, the first MAX_DIAGNOSTICS bytes


def _run(
    argv: list[str], what: str, cwd: Path, timeout: float, *, output: Path | None = None, limit: int = MAX_OUTPUT
) -> Ran:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}  # diagnostics in English, for _errors()
    log = cwd / "messages.txt"
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,  # its own process group, killed whole
            )
    except OSError as e:
        raise CheckError(f"cannot run {what}: {_text(e.strerror or e)}") from None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                proc.wait(min(_POLL, max(0.0, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise CheckError(f"{what} took over {timeout:g} s (killed; see --cc-timeout)") from None
                if _size(log) > MAX_MESSAGES:
                    raise CheckError(f"{what} wrote over 0x{MAX_MESSAGES:x} bytes of messages (killed)") from None
                if output is not None and _size(output) > limit:
                    raise CheckError(f"{what} wrote over 0x{limit:x} bytes to {output.name} (killed)") from None
    finally:
        _kill_group(proc)
    try:
        with open(log, "rb") as out:
            text = out.read(MAX_DIAGNOSTICS).decode("utf-8", "replace")
    except OSError as e:
        raise CheckError(f"cannot read the messages of {what}: {_text(e.strerror or e)}") from None
    return Ran(proc.returncode, text)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of the compiler's process group (a hung child, a daemon), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A private temporary directory, removed after; CheckError when there is none to be had."""
    try:
        tmp = tempfile.TemporaryDirectory(prefix="kstructs-", ignore_cleanup_errors=True)
    except OSError as e:
        raise CheckError(f"no usable temporary directory: {_text(e.strerror or e)}") from None
    with tmp as name:
        yield Path(name)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise CheckError(f"cannot write the probe to {_text(path.parent)}: {_text(e.strerror or e)}") from None


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_OUTPUT + 1)
    except FileNotFoundError:
        raise CheckError(f"the compiler wrote no {what}") from None
    except OSError as e:
        raise CheckError(f"cannot read the compiler's {what}: {_text(e.strerror or e)}") from None
    if len(data) > MAX_OUTPUT:
        raise CheckError(f"the compiler's {what} is over 0x{MAX_OUTPUT:x} bytes")
    return data


# ---------------------------------------------------------------------------
# The compiler's messages.

_DIAGNOSTIC = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+):(?:\d+:)? (?P<kind>fatal error|error|warning|note): (?P<msg>.*)$"
)
_NOT_CONSTANT = re.compile(r"initializer element is not (?:constant|a compile-time constant)")


def _errors(stderr: str) -> list[tuple[str, int, str, list[tuple[str, int]]]]:
    """Each error as (file, line, message, locations of its notes)."""
    errors: list[tuple[str, int, str, list[tuple[str, int]]]] = []
    for text in stderr.splitlines():
        m = _DIAGNOSTIC.match(text)
        if m is None:
            continue
        where = (m["file"], int(m["line"]))
        if m["kind"] in ("error", "fatal error"):
            errors.append((*where, m["msg"][:500], []))
        elif m["kind"] == "note" and errors:
            errors[-1][3].append(where)
    return errors


def _missing_header(stderr: str) -> str | None:
    m = re.search(r"error: ([^:\s]+): No such file or directory|no include path in which to search for (\S+)", stderr)
    return (m[1] or m[2]) if m else None


def _first_error(stderr: str) -> str:
    for file, line, msg, _ in _errors(stderr):
        return f"{file}:{line}: {msg}"
    lines = [t.strip() for t in stderr.splitlines() if t.strip()]
    return lines[-1][:500] if lines else "no message"


# ---------------------------------------------------------------------------
# The probe.


@dataclass(frozen=True)
class Evaluation:
    """The probe's answer: a value per query (None where its item failed), and
    the items that failed, each with the compiler's one-line message."""

    values: tuple[int | None, ...]
    failed: Mapping[str, str]
    rounds: int = 1  # compiles it took


@dataclass(frozen=True)
class Group:
    """Headers compiled as one program, and the queries asked of them."""

    headers: Sequence[str]
    queries: Sequence[Query]
    prelude: str = ""  # C text after the includes
    include_dirs: Sequence[Path] = field(default_factory=tuple)


def evaluate(
    cc: Compiler,
    headers: Sequence[str],
    queries: Sequence[Query],
    *,
    include_dirs: Sequence[Path] = (),
    prelude: str = "",
) -> Evaluation:
    """The value of every query, compiled with ``headers`` as one program (``-c``, never run).

    CheckError when the program cannot be compiled for a reason no item
    explains (a header that is missing or does not compile, a compiler that
    writes no object file), or after ``MAX_ROUNDS`` compiles."""
    failed: dict[str, str] = {}
    for q in queries:
        if (why := _usable(q.expr)) is not None:
            failed.setdefault(q.item, f"{why}: {q.expr[:80]!r}")
    static = [i for i, q in enumerate(queries) if q.item not in failed]
    folded: list[int] = []
    tried_fold: dict[int, str] = {}  # query index -> why it is no static initializer
    flags = ["-Werror=implicit-function-declaration", *(f"-I{d}" for d in include_dirs)]
    with workdir() as tmp:
        src, obj = tmp / "probe.c", tmp / "probe.o"
        for rounds in range(1, MAX_ROUNDS + 1):
            if not static and not folded:
                return Evaluation(tuple(None for _ in queries), failed, rounds - 1)
            program = _program(headers, prelude, queries, static, folded)
            _write(src, program.text)
            with contextlib.suppress(FileNotFoundError):
                obj.unlink()
            opt = ["-O2"] if folded else []
            built = cc.run([*flags, *opt, "-c", "-o", str(obj), str(src)], "the C compiler", tmp)
            if built.returncode == 0:
                values, more = _values(_read(obj, "object file"), program, queries)
                for i, msg in more.items():
                    failed.setdefault(queries[i].item, _join(msg, tried_fold.get(i, "")))
                out = tuple(v if queries[i].item not in failed else None for i, v in enumerate(values))
                return Evaluation(out, failed, rounds)
            if (name := _missing_header(built.output)) is not None:
                raise CheckError(cc.headers_not_found(name))
            bad: dict[int, str] = {}
            for file, line, msg, notes in _errors(built.output):
                for f, n in [(file, line), *notes]:
                    if Path(f).name == src.name and n in program.lines:
                        bad.setdefault(program.lines[n], msg)
            if not bad:
                first = _first_error(built.output)
                what = "the probe does" if first.startswith(str(src)) else "the headers do"
                raise CheckError(f"{what} not compile: {_text(first)}")
            for i, msg in bad.items():
                if _NOT_CONSTANT.search(msg) and i not in tried_fold:
                    tried_fold[i] = msg  # a static inline function call: let the optimizer fold it
                else:
                    failed.setdefault(queries[i].item, msg)
            folded = [i for i in [*folded, *sorted(set(tried_fold) - set(folded))] if queries[i].item not in failed]
            static = [i for i in static if i not in tried_fold and queries[i].item not in failed]
    raise CheckError(f"the probe does not compile after {MAX_ROUNDS} rounds of removing failed items")


def evaluate_groups(cc: Compiler, groups: Sequence[Group]) -> list[Evaluation]:
    """``evaluate`` for several programs (headers that cannot share one), two at a time."""
    if len(groups) <= 1:
        return [evaluate(cc, g.headers, g.queries, include_dirs=g.include_dirs, prelude=g.prelude) for g in groups]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(groups), os.cpu_count() or 1, 4)) as pool:
        futures = [
            pool.submit(evaluate, cc, g.headers, g.queries, include_dirs=g.include_dirs, prelude=g.prelude)
            for g in groups
        ]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class Abi:
    """What a target's C data model is, as its compiler says."""

    byteorder: str  # "little" or "big"
    pointer: int  # sizeof(void *)
    long: int  # sizeof(long)
    long_long_align: int  # _Alignof(long long), 4 on i386
    double_align: int  # _Alignof(double)

    def describe(self) -> str:
        model = "LP64" if self.long == self.pointer == 8 else "ILP32" if self.long == self.pointer == 4 else "?"
        return f"{model} {self.byteorder}-endian, long long aligned to {self.long_long_align}"

    def lays_out_like(self, other: Abi) -> bool:
        """Whether structures get the same sizes and offsets (byte order aside)."""
        return (self.pointer, self.long, self.long_long_align, self.double_align) == (
            other.pointer,
            other.long,
            other.long_long_align,
            other.double_align,
        )


_ABI_QUERIES: Final = (
    ("byteorder", "__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__"),
    ("pointer", "sizeof(void *)"),
    ("long", "sizeof(long)"),
    ("long_long_align", "_Alignof(long long)"),
    ("double_align", "_Alignof(double)"),
)


def target_abi(cc: Compiler) -> Abi:
    """The data model of the compiler's target (one compile, nothing run)."""
    done = evaluate(cc, [], [Query(name, expr) for name, expr in _ABI_QUERIES])
    if done.failed or any(v is None for v in done.values):
        raise CheckError(
            f"{cc.name} does not say its target's data model: {_text(next(iter(done.failed.values()), ''))}"
        )
    v = dict(zip((name for name, _ in _ABI_QUERIES), (int(x or 0) for x in done.values), strict=True))
    order = "big" if v["byteorder"] else "little"
    return Abi(order, v["pointer"], v["long"], v["long_long_align"], v["double_align"])


def host_abi() -> Abi:
    """The data model this Python's ctypes lays structures out by."""
    return Abi(
        sys.byteorder,
        ctypes.sizeof(ctypes.c_void_p),
        ctypes.sizeof(ctypes.c_long),
        ctypes.alignment(ctypes.c_longlong),
        ctypes.alignment(ctypes.c_double),
    )


# ---------------------------------------------------------------------------
# The call the headers check used before Query and evaluate().


def _compiler(cc: str | Compiler | None, defines: Sequence[str] = ()) -> Compiler:
    if isinstance(cc, Compiler):
        return replace(cc, flags=(*cc.flags, *_defines(defines))) if defines else cc
    return compiler(cc, defines=defines)


def _probe(
    cc: Compiler, headers: Sequence[str], include_dirs: Sequence[Path], facts: Sequence[_Fact]
) -> tuple[dict[int, int], dict[str, str]]:
    """Evaluate the facts' C expressions in one program: values by fact index,
    and the units that did not compile, with the compiler's first message."""
    live = [i for i, f in enumerate(facts) if f.expr]
    done = evaluate(cc, headers, [Query(facts[i].unit, facts[i].expr) for i in live], include_dirs=include_dirs)
    values = {i: v for i, v in zip(live, done.values, strict=True) if v is not None}
    return values, dict(done.failed)

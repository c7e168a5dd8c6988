"""The C compiler driver: the compiler's argv, running it, and the probe that evaluates C expressions."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kstructs.conformance.model import _Fact
from kstructs.errors import CheckError

# ---------------------------------------------------------------------------
# The compiler.


def _compiler(cc: str | None) -> list[str]:
    spec = cc or os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if not spec:
        raise CheckError("no C compiler: pass --cc or set CC, or install gcc")
    argv = shlex.split(spec)
    if not argv or shutil.which(argv[0]) is None:
        raise CheckError(f"no C compiler: {spec!r} not found")
    return argv


_DIAGNOSTIC = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+):(?:\d+:)? (?P<kind>fatal error|error|warning|note): (?P<msg>.*)$"
)


def _run(argv: list[str], what: str, cwd: str) -> subprocess.CompletedProcess[str]:
    try:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}  # diagnostics in English, for _errors()
        return subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=120, cwd=cwd)
    except OSError as e:
        raise CheckError(f"cannot run {what} {argv[0]}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise CheckError(f"{what} {argv[0]} took over 120 s") from None


def _errors(stderr: str) -> list[tuple[str, int, str, list[tuple[str, int]]]]:
    """Each error as (file, line, message, locations of its notes)."""
    errors: list[tuple[str, int, str, list[tuple[str, int]]]] = []
    for text in stderr.splitlines():
        m = _DIAGNOSTIC.match(text)
        if m is None:
            continue
        where = (m["file"], int(m["line"]))
        if m["kind"] in ("error", "fatal error"):
            errors.append((*where, m["msg"], []))
        elif m["kind"] == "note" and errors:
            errors[-1][3].append(where)
    return errors


def _missing_header(stderr: str) -> str | None:
    m = re.search(r"error: ([^:\s]+): No such file or directory|no include path in which to search for (\S+)", stderr)
    return (m[1] or m[2]) if m else None


def _probe(
    cc: list[str], headers: Sequence[str], include_dirs: Sequence[Path], facts: Sequence[_Fact]
) -> tuple[dict[int, int], dict[str, str]]:
    """Evaluate the facts' C expressions in one program: values by fact index,
    and the units that did not compile, with the compiler's first message."""
    flags = ["-Werror=implicit-function-declaration", *(f"-I{d}" for d in include_dirs)]
    live = [i for i, f in enumerate(facts) if f.expr]
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kstructs-") as tmp:
        src, exe = Path(tmp, "probe.c"), Path(tmp, "probe")
        for _ in range(20):
            lines = [f"#include <{h}>" for h in headers]
            lines += ["#include <stddef.h>", "#include <stdio.h>", "int main(void) {"]
            lines.append("    struct { unsigned long long u; int neg; } v[] = {")
            first = len(lines) + 1
            for i in live:
                e = facts[i].expr
                lines.append(f"        {{ (unsigned long long)({e}), ({e}) < 0 }},")
            lines.append("        { 0, 0 } };")
            lines.append("    for (size_t i = 0; i + 1 < sizeof v / sizeof v[0]; i++)")
            lines.append('        printf("%llu %d\\n", v[i].u, v[i].neg);')
            lines += ["    return 0;", "}", ""]
            src.write_text("\n".join(lines))
            built = _run([*cc, *flags, "-o", str(exe), str(src)], "the C compiler", tmp)
            if built.returncode == 0:
                break
            if (name := _missing_header(built.stderr)) is not None:
                raise CheckError(f"headers not found: {name}")
            bad: dict[int, str] = {}
            for file, line, msg, notes in _errors(built.stderr):
                for f, n in [(file, line), *notes]:
                    if Path(f).name == src.name and first <= n < first + len(live):
                        bad.setdefault(live[n - first], msg)
            if not bad:
                first_error = _first_error(built.stderr)
                what = "the probe does" if first_error.startswith(str(src)) else "the headers do"
                raise CheckError(f"{what} not compile: {first_error}")
            for i, msg in bad.items():
                failed.setdefault(facts[i].unit, msg)
            live = [i for i in live if facts[i].unit not in failed]
        else:
            raise CheckError("the probe does not compile after 20 rounds of removing failed items")
        ran = _run([str(exe)], "the probe", tmp)
        if ran.returncode != 0:
            raise CheckError(f"the probe failed with status {ran.returncode}")
    values: dict[int, int] = {}
    for i, text in zip(live, ran.stdout.splitlines(), strict=True):
        u, neg = text.split()
        values[i] = int(u) - (1 << 64) if neg == "1" else int(u)
    return values, failed


def _first_error(stderr: str) -> str:
    for file, line, msg, _ in _errors(stderr):
        return f"{file}:{line}: {msg}"
    return stderr.strip().splitlines()[-1] if stderr.strip() else "no message"

"""kstructs check: any module's ctypes classes, constants and enums against C.

The modules under tests/check_modules mirror cases.h: right.py correctly,
wrong.py with one mistake per class. What "correct" means comes from the C
compiler: a C program prints the bytes of each bitfield case, and the
expected mismatches name C's values as the compiler computes them.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import c_values, compiler, proc_event_align

from kstructs.conformance import discover
from kstructs.conformance.bits import bit_span
from kstructs.conformance.model import DEFAULT_BTF
from kstructs.conformance.progress import Progress

pytestmark = pytest.mark.cc

HERE = Path(__file__).resolve().parent
CASES = HERE / "check_modules"
RIGHT = str(CASES / "right.py")
WRONG = str(CASES / "wrong.py")
INCLUDE = ["--include-dir", str(CASES)]


def _other_python() -> str | None:
    """A CPython 3.11+ other than the one running the tests: pyenv's, or one on PATH."""
    this = sys.version_info[:2]
    base = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = [str(v / "bin" / "python") for v in sorted(base.glob("3.1*")) if (v / "bin" / "python").is_file()]
    found += [p for minor in range(11, 16) if (p := shutil.which(f"python3.{minor}")) is not None]
    for exe in found:
        done = subprocess.run(
            [exe, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, check=False
        )
        words = done.stdout.split()
        if done.returncode == 0 and len(words) == 2:
            version = (int(words[0]), int(words[1]))
            if version >= (3, 11) and version != this:
                return exe
    return None


OTHER_PYTHON = _other_python()


def check(*args: str, cwd: Path | None = None) -> tuple[int, dict[str, Any], str]:
    """Run ``kstructs check --json`` as CI does: status, document, stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "kstructs", "check", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    return done.returncode, json.loads(done.stdout), done.stderr


def mismatches(doc: dict[str, Any]) -> set[tuple[str, str, object, object]]:
    return {(f["category"], f["item"], f["binding"], f["c"]) for f in doc["findings"] if f["severity"] == "mismatch"}


def others(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["category"], f["item"]) for f in doc["findings"] if f["severity"] != "mismatch"}


def test_a_right_module_conforms() -> None:
    status, doc, err = check(RIGHT, *INCLUDE)
    assert (status, err) == (0, "")
    assert mismatches(doc) == set()
    # net_order is a BigEndianStructure: its byte order is not compared where it is not the host's.
    foreign_order = {("not-compared", "struct net_order")} if sys.byteorder == "little" else set()
    assert others(doc) == {
        ("not-compared", "struct opaque_thing"),
        *foreign_order,
        ("prefix", "struct versioned"),
        ("width", "CASES_IOCTL"),
    }
    assert doc["kstructs_check"] == 1
    assert doc["compared"] == {"layouts": True, "bitfields": True, "values": True}
    assert doc["checked"] > 90


def wrong_mismatches() -> set[tuple[str, str, object, object]]:
    """wrong.py's mistakes, as the check must report them on this data model: where the numbers
    depend on it (a pointer's size, __u64's alignment) the compiler gives both sides."""
    c = c_values(
        {
            "flexible.size": "sizeof(struct flexible)",
            "flexible.align": "_Alignof(struct flexible)",
            "flexible.items": "offsetof(struct flexible, items)",
            "pointer.size": "sizeof(struct as_pointer)",  # wrong.py's flexible: a __u32 and a pointer
            "pointer.align": "_Alignof(struct as_pointer)",
            "pointer.items": "offsetof(struct as_pointer, items)",
            "versioned.size": "sizeof(struct versioned)",
            "versioned.align": "_Alignof(struct versioned)",
        },
        prelude=f'#include "{CASES / "cases.h"}"\nstruct as_pointer {{ __u32 count; __u32 *items; }};\n',
    )
    found: set[tuple[str, str, object, object]] = {
        ("bitfield", "struct flags.mode", "bit 1, 4 bits", "bit 1, 3 bits"),
        ("bitfield", "struct flags.level", "bit 5, 4 bits", "bit 4, 4 bits"),
        ("type", "struct status.on", "a full field of 4 bytes", "a bitfield"),
        ("type", "struct outer.inner", "array of 44 x unsigned 1-byte integer", "a struct"),
        ("type", "struct flexible.items", "pointer", "a flexible array"),
        ("size", "struct packed_thing", 8, 5),
        ("align", "struct packed_thing", 4, 1),
        ("offset", "struct packed_thing.value", 4, 1),
        ("value", "COLOUR_BLUE", 8, 4),
        ("value", "CASES_IOCTL", -1070827519, 0xC02C7801),
    }
    # the pointer's alignment moves the rest: true differences, each said once (none where a
    # pointer is 4 bytes); wrong.py's versioned is two __u32, C's is 4-aligned only where __u64 is
    sides = [
        ("size", "struct flexible", c["pointer.size"], c["flexible.size"]),
        ("align", "struct flexible", c["pointer.align"], c["flexible.align"]),
        ("offset", "struct flexible.items", c["pointer.items"], c["flexible.items"]),
        ("size", "struct versioned", 8, c["versioned.size"]),
        ("align", "struct versioned", 4, c["versioned.align"]),
    ]
    return found | {side for side in sides if side[2] != side[3]}


def test_a_wrong_module_gets_one_finding_per_mistake() -> None:
    status, doc, _ = check(WRONG, *INCLUDE)
    assert status == 1
    expected = wrong_mismatches()
    if ctypes.sizeof(ctypes.c_void_p) == 8 and ctypes.alignment(ctypes.c_uint64) == 8:
        assert len(expected) == 15  # LP64: all five above differ
    assert mismatches(doc) == expected
    (ioctl,) = [f for f in doc["findings"] if f["item"] == "CASES_IOCTL"]
    assert ioctl["note"].startswith("equal modulo 2**32")
    assert doc["counts"]["mismatch"] == len(expected)


BYTES_C = r"""
#include <stdio.h>
#include <string.h>
#include "cases.h"
#define SHOW(T, F, V) do { struct T s; memset(&s, 0, sizeof s); s.F = V; \
    printf(#T " " #F " %d ", V); for (size_t i = 0; i < sizeof s; i++) printf("%02x", ((unsigned char *)&s)[i]); \
    printf("\n"); } while (0)
int main(void) {
    SHOW(flags, ready, -1); SHOW(flags, ready, 1); SHOW(flags, mode, -1); SHOW(flags, mode, 1);
    SHOW(flags, level, -1); SHOW(flags, level, 1); SHOW(flags, big, -1); SHOW(flags, big, 1);
    SHOW(status, on, -1); SHOW(status, on, 1); SHOW(status, rest, -1); SHOW(status, rest, 1);
    return 0;
}
"""


def c_bitfield_bytes(tmp_path: Path) -> dict[tuple[str, str, int], bytes]:
    src = tmp_path / "bytes.c"
    src.write_text(BYTES_C)
    exe = tmp_path / "bytes"
    subprocess.run([compiler(), "-w", f"-I{CASES}", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return {(t, f, int(v)): bytes.fromhex(b) for t, f, v, b in rows}


def test_right_bitfields_have_the_compilers_bytes(tmp_path: Path) -> None:
    """The method of CPython's test_generated_structs: each field at -1 and 1, the rest 0."""
    expected = c_bitfield_bytes(tmp_path)
    module = discover.load(RIGHT)
    for (tag, name, value), c_bytes in expected.items():
        obj = getattr(module, tag)()
        setattr(obj, name, value)
        assert bytes(obj) == c_bytes, (tag, name, value)


def test_bitfield_findings_give_the_compilers_bits(tmp_path: Path) -> None:
    expected = c_bitfield_bytes(tmp_path)
    big = sys.byteorder == "big"
    for name in ("mode", "level"):
        first, width = bit_span(expected[("flags", name, -1)], big) or (0, 0)
        _, doc, _ = check(WRONG, *INCLUDE)
        (finding,) = [f for f in doc["findings"] if f["item"] == f"struct flags.{name}"]
        assert finding["c"] == f"bit {first}, {width} bits"


def test_bit_span_in_both_byte_orders() -> None:
    assert bit_span(bytes([0b0001_1000, 0]), big_endian=False) == (3, 2)
    assert bit_span(bytes([0, 0b0000_0001]), big_endian=False) == (8, 1)
    assert bit_span(bytes([0b1100_0000, 0]), big_endian=True) == (0, 2)
    assert bit_span(bytes([0, 0b0000_0001]), big_endian=True) == (15, 1)
    assert bit_span(bytes(2), big_endian=True) is None


def test_skips_say_why_and_stale_ones_are_an_error() -> None:
    status, doc, _ = check(WRONG, *INCLUDE, "--skip", "struct packed_thing=packed in C, not in this binding")
    assert status == 1
    assert ("skipped", "struct packed_thing") in others(doc)
    assert not {m for m in mismatches(doc) if "packed_thing" in m[1]}
    status, doc, err = check(RIGHT, *INCLUDE, "--skip", "struct no_such_thing=gone")
    assert status == 2
    assert err == "kstructs check: cannot check: --skip struct no_such_thing matches nothing in right\n"
    assert (doc["status"], doc["conforms"], doc["error"]) == (2, None, err.split("cannot check: ")[1].strip())


RENAMED = """
import ctypes
import enum

class Arrays(ctypes.Structure):
    _fields_ = (("words", ctypes.c_uint32 * 4), ("label", ctypes.c_char * 16), ("grid", (ctypes.c_int16 * 3) * 2))

class TheUnion(ctypes.Union):
    _fields_ = (("number", ctypes.c_uint32), ("bytes", ctypes.c_uint8 * 4))

class Hue(enum.IntEnum):
    RED = 1
    GREEN = 2
    BLUE = 4
    ULTRAVIOLET = 8

class Shade(enum.IntFlag):
    R = 1
    G = 2
"""

PYPROJECT = """
[tool.kstructs.check]
include-dirs = ["{include}"]

[tool.kstructs.check."renamed"]
headers = ["cases.h"]
tags = {{ Arrays = "struct with_arrays", TheUnion = "struct outer.u" }}
fields = {{ "Arrays.label" = "name" }}
constants = {{ "Hue.*" = "COLOUR_*", "Shade.R" = "COLOUR_RED" }}
"""


def test_settings_from_pyproject_with_no_arguments(tmp_path: Path) -> None:
    (tmp_path / "renamed.py").write_text(RENAMED)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(include=CASES))
    status, doc, err = check(cwd=tmp_path)
    assert (status, err) == (1, "")  # Hue.ULTRAVIOLET: COLOUR_ULTRAVIOLET is no C name
    assert [m["name"] for m in doc["modules"]] == ["renamed"]
    assert mismatches(doc) == {("missing-in-headers", "COLOUR_ULTRAVIOLET", 8, None)}
    assert ("not-compared", "Shade.G") in others(doc)
    checked = {f["item"] for f in doc["findings"]}
    assert "struct with_arrays.name" not in checked
    # The same with the command line: it wins over pyproject.toml.
    status, doc, _ = check("renamed", "--constant", "Hue.ULTRAVIOLET=CASES_MAX", cwd=tmp_path)
    assert mismatches(doc) == {("value", "CASES_MAX", 8, 16)}


def test_a_member_path_names_an_untagged_type(tmp_path: Path) -> None:
    (tmp_path / "renamed.py").write_text(RENAMED.replace("ctypes.c_uint8 * 4", "ctypes.c_uint8 * 5"))
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(include=CASES))
    _, doc, _ = check(cwd=tmp_path)
    assert ("size", "struct outer.u", 8, 4) in mismatches(doc)
    assert ("size", "struct outer.u.bytes", 5, 4) in mismatches(doc)


@proc_event_align
def test_the_projects_own_binding_conforms() -> None:
    status, doc, _ = check("kstructs.netlink", "kstructs.connector", "kstructs.cn_proc")
    assert status == 0
    assert mismatches(doc) == set()
    assert {c for c, _ in others(doc)} <= {"newer", "not-mirrored"}
    if os.access(DEFAULT_BTF, os.R_OK):
        status, doc, _ = check("kstructs.netlink", "kstructs.connector", "kstructs.cn_proc", "--btf")
        assert status == 0, mismatches(doc)
        assert [s["source"] for s in doc["sources"]] == ["headers", "btf"]


def test_btf_of_an_object_compiled_with_gbtf(tmp_path: Path) -> None:
    src = tmp_path / "cases.c"
    src.write_text('#include "cases.h"\nstruct flags f; struct status s; struct outer o; struct flexible x;\n')
    obj = tmp_path / "cases.o"
    if subprocess.run([compiler(), "-gbtf", f"-I{CASES}", "-c", "-o", str(obj), str(src)], check=False).returncode:
        pytest.skip("this compiler cannot emit BTF (-gbtf)")
    status, doc, _ = check(RIGHT, *INCLUDE, "--btf", str(obj))
    assert status == 0, mismatches(doc)
    _, doc, _ = check(WRONG, *INCLUDE, "--btf", str(obj))
    btf = {m for m in mismatches(doc) if m[0] in ("bitfield", "type")} & {
        (f["category"], f["item"], f["binding"], f["c"]) for f in doc["findings"] if f["source"] == "btf"
    }
    assert btf == {
        ("bitfield", "struct flags.mode", "bit 1, 4 bits", "bit 1, 3 bits"),
        ("bitfield", "struct flags.level", "bit 5, 4 bits", "bit 4, 4 bits"),
        ("type", "struct status.on", "a full field of 4 bytes", "a bitfield"),
        ("type", "struct outer.inner", "array of 44 x unsigned 1-byte integer", "struct with_arrays"),
        ("type", "struct flexible.items", "pointer", "an array"),
    }


@pytest.mark.skipif(OTHER_PYTHON is None, reason="no CPython 3.11+ other than this one (pyenv or PATH)")
def test_another_interpreter_describes_the_binding() -> None:
    assert OTHER_PYTHON is not None
    other = subprocess.run(
        [OTHER_PYTHON, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    status, doc, _ = check(RIGHT, *INCLUDE, "--python", OTHER_PYTHON)
    assert status == 0, mismatches(doc)
    assert doc["binding"]["python"] == other != platform.python_version()
    _, doc, _ = check(WRONG, *INCLUDE, "--python", OTHER_PYTHON)
    assert len(mismatches(doc)) == len(wrong_mismatches())


def test_a_foreign_data_model_compares_values_only(tmp_path: Path) -> None:
    """A C side whose data model is not the binding interpreter's: never a layout verdict."""
    fake = tmp_path / "python"
    doc = discover.document([WRONG])
    size = 4 if doc["abi"]["pointer_size"] == 8 else 8  # not this interpreter's
    doc["abi"] = {**doc["abi"], "pointer_size": size, "long_size": size}
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(doc)}\nEOF\n")
    fake.chmod(0o755)
    status, got, _ = check(WRONG, *INCLUDE, "--python", str(fake))
    assert status == 1
    assert got["compared"] == {"layouts": False, "bitfields": False, "values": True}
    assert mismatches(got) == {("value", "COLOUR_BLUE", 8, 4), ("value", "CASES_IOCTL", -1070827519, 0xC02C7801)}
    (note,) = [f["note"] for f in got["findings"] if f["item"] == "layouts"]
    assert f"the binding's interpreter has {size}-byte pointers, {size}-byte long" in note


def test_another_byte_order_compares_all_but_bitfields(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    doc = discover.document([WRONG])
    doc["abi"] = {**doc["abi"], "big_endian": 1 - doc["abi"]["big_endian"]}
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(doc)}\nEOF\n")
    fake.chmod(0o755)
    status, got, _ = check(WRONG, *INCLUDE, "--python", str(fake))
    assert status == 1
    assert got["compared"] == {"layouts": True, "bitfields": False, "values": True}
    assert not {m for m in mismatches(got) if m[0] == "bitfield"}
    assert ("size", "struct packed_thing", 8, 5) in mismatches(got)


#: A data model: pointer and long sizes, long long and double alignments (in a struct), big-endian.
DataModel = tuple[int, int, int, int, bool]


@pytest.mark.parametrize(
    ("triple", "model"),
    [
        ("i686-linux-gnu", (4, 4, 4, 4, False)),
        ("s390x-linux-gnu", (8, 8, 8, 8, True)),
        ("aarch64-linux-gnu", (8, 8, 8, 8, False)),
    ],
)
def test_a_cross_compiler_target_says_what_is_compared(triple: str, model: DataModel) -> None:
    if shutil.which(f"{triple}-gcc") is None:
        pytest.skip(f"no {triple}-gcc (Debian: gcc-{triple})")
    host = c_values(
        {
            "0": "sizeof(void *)",
            "1": "sizeof(long)",
            "2": "offsetof(struct data_model, ll)",
            "3": "offsetof(struct data_model_double, d)",
            "4": "__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__",
        },
        prelude="struct data_model { char c; long long ll; };\nstruct data_model_double { char c; double d; };\n",
    )
    mine = tuple(host[str(i)] for i in range(5))
    # Layouts are compared where the data models agree, bitfields where the byte order does too.
    layouts = mine[:4] == model[:4]
    status, doc, _ = check(RIGHT, *INCLUDE, "--target", triple)
    assert status == 0, mismatches(doc)
    assert doc["compared"] == {"layouts": layouts, "bitfields": layouts and bool(mine[4]) == model[4], "values": True}
    assert doc["target"] == triple


IN_ADDR = """
import ctypes
HEADER = "{header}"

class in_addr(ctypes.Structure):
    _fields_ = (("s_addr", ctypes.c_uint32),)
"""


def test_headers_that_cannot_share_a_program_are_compiled_apart(tmp_path: Path) -> None:
    """glibc's <netinet/in.h> after the kernel's <linux/in.h>: struct in_addr twice."""
    (tmp_path / "uapi_in.py").write_text(IN_ADDR.format(header="linux/in.h"))
    (tmp_path / "libc_in.py").write_text(IN_ADDR.format(header="netinet/in.h"))
    status, doc, err = check(str(tmp_path / "uapi_in.py"), str(tmp_path / "libc_in.py"))
    assert (status, err, mismatches(doc)) == (0, "", set())
    assert [s["source"] for s in doc["sources"]] == ["headers", "headers"]
    assert all(s["checked"] > 0 for s in doc["sources"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module_here"], "cannot import no_such_module_here: ModuleNotFoundError: "),
        ([RIGHT], "headers not found: cases.h"),
        (["kstructs._abi"], "no header for kstructs._abi: pass --header, or set HEADER in the module"),
        ([RIGHT, *INCLUDE, "--tag", "nothing"], "--tag 'nothing': expected NAME=VALUE"),
        ([RIGHT, *INCLUDE, "--cc", "no-such-cc"], "no C compiler: 'no-such-cc' not found"),
        ([RIGHT, *INCLUDE, "--btf", "/no/such/btf"], "cannot read BTF /no/such/btf: No such file or directory"),
        ([RIGHT, *INCLUDE, "--python", "/no/such/python"], "cannot run /no/such/python: No such file or directory"),
        ([RIGHT, "--bogus"], "usage: unrecognized arguments: --bogus"),
    ],
    ids=["import", "no-include-dir", "no-header", "bad-tag", "no-cc", "no-btf", "no-python", "usage"],
)
def test_cannot_run_exits_2_with_one_line_and_a_document(args: list[str], message: str) -> None:
    status, doc, err = check(*args)
    assert status == 2
    assert err.startswith("kstructs check: cannot check: " + message.split(": ", maxsplit=1)[0])
    assert message in err
    assert err.count("\n") == 1
    assert (doc["status"], doc["conforms"], doc["findings"]) == (2, None, [])
    assert message in doc["error"]


def test_text_output_and_exit_status_without_json() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kstructs", "check", WRONG, *INCLUDE],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    assert done.returncode == 1
    *rows, summary = done.stdout.splitlines()
    assert summary.startswith("kstructs check: does not conform: ")
    assert f"{len(wrong_mismatches())} mismatches" in summary
    assert ["value", "COLOUR_BLUE", "binding=8", "headers=4"] in [r.split() for r in rows]
    assert done.stderr == ""  # progress only on a terminal


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    tty = _Tty()
    p = Progress("kstructs check", tty, delay=0.0)
    p("compiling 10 facts")
    p.done()
    assert "kstructs check: compiling 10 facts" in tty.getvalue()
    assert tty.getvalue().endswith("\r\033[K")
    plain = io.StringIO()
    q = Progress("kstructs check", plain, delay=0.0)
    q("compiling 10 facts")
    q.done()
    assert plain.getvalue() == ""


def test_discover_finds_nested_anonymous_and_enum_members() -> None:
    doc = discover.document([RIGHT])
    (module,) = doc["modules"]
    keys = {r["key"] for r in module["records"]}
    assert {"right:outer._u", "right:outer._halves", "right:Words"} <= keys | {"right:Words"}
    assert module["enums"] == {"Colour": {"RED": 1, "GREEN": 2, "BLUE": 4}}
    assert module["constants"] == {"CASES_MAX": 16, "CASES_IOCTL": -1070827519}
    (flags,) = [r for r in module["records"] if r["name"] == "flags"]
    mode = next(f for f in flags["fields"] if f["name"] == "mode")
    obj = discover.load(RIGHT).flags()
    obj.mode = -1
    assert mode["masks"]["-1"] == bytes(obj).hex()
    (outer,) = [r for r in module["records"] if r["name"] == "outer"]
    assert outer["anonymous"] == ["halves"]
    assert ctypes.sizeof(discover.load(RIGHT).outer) == outer["size"]


@pytest.mark.wild
def test_linuxpy_findings_are_each_accounted_for() -> None:
    """Opt-in (pytest -m wild): linuxpy from PyPI, every mismatch a bug a C program in tools/wild shows."""
    done = subprocess.run(
        [sys.executable, str(HERE.parent / "tools" / "wild_check.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert {m["module"] for m in doc["modules"]} >= {"linuxpy.video.raw", "linuxpy.usb.raw"}
    assert all(not m["unexplained"] for m in doc["modules"])
    usb = next(m for m in doc["modules"] if m["module"] == "linuxpy.usb.raw")
    assert usb["confirmed"]["flexible_as_pointer.c"] > 0
    assert (
        "USBDEVFS_SUBMITURB               C 0x8038550a  linuxpy 0x8040550a" in doc["programs"]["flexible_as_pointer.c"]
    )


@pytest.mark.wild
def test_installed_from_a_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    """Opt-in (pytest -m wild): the wheel alone, no checkout, runs kstructs check."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(HERE.parent)],
        check=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("kstructs-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=300)
    subprocess.run([str(tmp_path / "venv" / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=600)
    done = subprocess.run(
        [
            str(tmp_path / "venv" / "bin" / "kstructs"),
            "check",
            "kstructs.netlink",
            "kstructs.connector",
            "kstructs.cn_proc",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("kstructs check: conforms: ")


WIDE_H = """struct wide { int a[4]; } __attribute__((aligned(16)));  /* 16 bytes either way */
"""
WIDE_PY = """import ctypes

HEADER = "wide.h"


class wide(ctypes.Structure):
    _align_ = 16
    _fields_ = (("a", ctypes.c_int * 4),)
"""


def test_an_align_this_python_ignores_is_a_known_explained_mismatch(tmp_path: Path) -> None:
    # C says 16 (the compiler, in the check itself); CPython 3.13 honours _align_,
    # older ctypes ignores it and lays the class out at the int's alignment.
    (tmp_path / "wide.h").write_text(WIDE_H)
    (tmp_path / "wide.py").write_text(WIDE_PY)
    status, doc, _ = check(str(tmp_path / "wide.py"), "--include-dir", str(tmp_path))
    if sys.version_info >= (3, 13):
        assert (status, mismatches(doc)) == (0, set())
        return
    assert status == 1
    int_align = ctypes.alignment(ctypes.c_int)
    assert mismatches(doc) == {("align", "struct wide", int_align, 16)}
    (finding,) = [f for f in doc["findings"] if f["category"] == "align"]
    assert finding["note"] == (
        "known limit: the class asks for _align_ = 16, which this interpreter's ctypes ignores"
        " (CPython 3.13 honours it), so a struct that embeds it is laid out short"
    )


def test_an_align_this_python_gives_has_no_note(tmp_path: Path) -> None:
    # The same class, honest about its alignment: a mismatch with no excuse.
    (tmp_path / "wide.h").write_text(WIDE_H)
    (tmp_path / "wide.py").write_text(WIDE_PY.replace("    _align_ = 16\n", ""))
    status, doc, _ = check(str(tmp_path / "wide.py"), "--include-dir", str(tmp_path))
    assert status == 1
    (finding,) = [f for f in doc["findings"] if f["category"] == "align"]
    assert (finding["binding"], finding["c"], finding["note"]) == (ctypes.alignment(ctypes.c_int), 16, "")

"""kstructs.conformance.check_headers: the binding against the installed
headers, and against copies of them with one change each."""

from __future__ import annotations

import ctypes
import dataclasses
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import compiler, header_version, proc_event_align, tree

from kstructs import cn_proc, connector, netlink
from kstructs.conformance import CATEGORIES, Binding, CheckError, Finding, check_headers
from kstructs.conformance.cc import Compiler, Group, Query, evaluate, evaluate_groups
from kstructs.conformance.cc import compiler as cc_driver

BINDINGS = [Binding.from_module(m) for m in (netlink, connector, cn_proc)]
Row = tuple[str, str, object, object]

pytestmark = pytest.mark.cc


def rows(findings: Iterable[Finding]) -> set[Row]:
    """The mismatches, as (category, item, binding value, C value)."""
    return {(f.category, f.item, f.binding, f.c) for f in findings if f.severity == "mismatch"}


def newer_than_installed(item: str, binding: Binding) -> bool:
    return item in binding.added_in and tuple(map(int, binding.added_in[item].split(".")[:2])) > header_version()


@proc_event_align
def test_installed_headers_conform() -> None:
    report = check_headers(BINDINGS)
    assert rows(report.findings) == set()
    assert not report.failed()
    assert report.version is not None
    assert report.description.startswith(f"Linux {report.version} headers (")
    assert report.checked > 800
    assert {f.item for f in report.findings if f.category == "not-mirrored"} == set(netlink.NOT_MIRRORED)


@proc_event_align
def test_a_version_record_later_than_headers_that_have_the_item() -> None:
    # A wrong ADDED_IN entry would turn a real absence into a harmless "newer": the check says so.
    have = header_version()
    later = f"{have[0] + 1}.0"
    wrong = dataclasses.replace(BINDINGS[2], added_in={**cn_proc.ADDED_IN, "PROC_EVENT_COMM": later})
    report = check_headers([BINDINGS[0], BINDINGS[1], wrong])
    assert rows(report.findings) == {("added-in", "PROC_EVENT_COMM", later, f"{have[0]}.{have[1]}")}


def test_items_newer_than_the_headers_are_notes() -> None:
    report = check_headers(BINDINGS)
    newer = {f.item for f in report.findings if f.category == "newer"}
    cn = BINDINGS[2]
    for item in ("struct proc_input", "PROC_EVENT_NONZERO_EXIT", "PROC_EVENT_ALL", "valid_event"):
        assert (item in newer) == newer_than_installed(item, cn)
    for f in report.findings:
        if f.category == "newer":
            assert f.note.startswith("added in Linux ")
            assert f.severity == "note"
    assert report.failed(strict=True) == bool(newer)


# (pattern in the installed header, replacement) -> the exact mismatches
CHANGES: dict[str, tuple[str, str, str, set[Row]]] = {
    "widened-field": (
        "linux/connector.h",
        r"__u16(\s+)len;",
        r"__u32\1len;",
        {
            ("size", "struct cn_msg", 20, 24),
            ("size", "struct cn_msg.len", 2, 4),
            ("offset", "struct cn_msg.flags", 18, 20),
            ("offset", "struct cn_msg.data", 20, 22),
        },
    ),
    "swapped-fields": (
        "linux/netlink.h",
        r"__u16(\s+)nlmsg_type;([^\n]*)\n(\s*)__u16(\s+)nlmsg_flags;",
        r"__u16\1nlmsg_flags;\2\n\3__u16\4nlmsg_type;",
        {("offset", "struct nlmsghdr.nlmsg_type", 4, 6), ("offset", "struct nlmsghdr.nlmsg_flags", 6, 4)},
    ),
    "changed-define": (
        "linux/connector.h",
        r"#define CN_IDX_PROC(\s+)0x1",
        r"#define CN_IDX_PROC\g<1>0x2",
        {("value", "CN_IDX_PROC", 1, 2)},
    ),
    "new-define": (
        "linux/connector.h",
        r"#define CN_NETLINK_USERS",
        "#define CN_IDX_NEW 0xB\n#define CN_NETLINK_USERS",
        {("missing-in-binding", "CN_IDX_NEW", None, 11)},
    ),
    "removed-define": (
        "linux/connector.h",
        r"#define CN_VSS_VAL[^\n]*\n",
        "",
        {("missing-in-headers", "CN_VSS_VAL", 1, None)},
    ),
    "new-enumerator": (
        "linux/cn_proc.h",
        r"PROC_CN_MCAST_IGNORE = 2",
        "PROC_CN_MCAST_IGNORE = 2,\n\tPROC_CN_MCAST_FLUSH = 3",
        {("missing-in-binding", "PROC_CN_MCAST_FLUSH", None, 3)},
    ),
    "changed-enumerator": (
        "linux/netlink.h",
        r"NLMSGERR_ATTR_MSG,",
        "NLMSGERR_ATTR_MSG = 7, NLMSGERR_ATTR_MSG_OLD = 1,",
        {
            ("value", "NLMSGERR_ATTR_MSG", 1, 7),
            ("missing-in-binding", "NLMSGERR_ATTR_MSG_OLD", None, 1),
        },
    ),
    "renamed-field": (
        "linux/cn_proc.h",
        r"exit_code, exit_signal;",
        "exit_code, exit_sig;",
        {
            ("missing-in-headers", "struct exit_proc_event.exit_signal", 12, None),
            ("missing-in-binding", "struct exit_proc_event.exit_sig", None, 12),
        },
    ),
    "new-union-member": (
        "linux/cn_proc.h",
        r"\} exit;",
        "} exit;\n\t\tstruct { __u32 flags; } extra;",
        {("missing-in-binding", "struct proc_event.event_data.extra", None, 16)},
    ),
    "changed-signedness": (
        "linux/cn_proc.h",
        r"__u32 cpu;",
        "__s32 cpu;",
        {("signedness", "struct proc_event.cpu", "unsigned", "signed")},
    ),
    "changed-array-length": (
        "linux/cn_proc.h",
        r"comm\[16\]",
        "comm[20]",
        {
            ("length", "struct comm_proc_event.comm", 16, 20),
            ("size", "struct comm_proc_event.comm", 16, 20),
            ("size", "struct comm_proc_event", 24, 28),
            ("size", "struct proc_event.event_data", 24, 28),
            ("size", "struct proc_event.event_data.comm", 24, 28),
            ("size", "struct proc_event", 40, 48),
        },
    ),
    "changed-member-type": (
        "linux/netlink.h",
        r"struct nlmsghdr msg;",
        "struct { __u32 a, b, c, d; } msg;",
        {("type", "struct nlmsgerr.msg", "struct nlmsghdr", "not struct nlmsghdr")},
    ),
    "removed-struct": (
        "linux/netlink.h",
        r"struct nl_pktinfo \{[^}]*\};",
        "",
        {("missing-in-headers", "struct nl_pktinfo", 4, None)},
    ),
    "new-struct": (
        "linux/connector.h",
        r"struct cb_id \{",
        "struct cn_new { __u32 a; __u16 b; };\n\nstruct cb_id {",
        {("missing-in-binding", "struct cn_new", None, 8)},
    ),
    "changed-macro": (
        "linux/netlink.h",
        r"\(\(len\)\+NLMSG_ALIGNTO-1\)",
        "((len)+NLMSG_ALIGNTO)",
        {
            ("macro", "NLMSG_ALIGN(0)", 0, 4),
            ("macro", "NLMSG_LENGTH(0)", 16, 20),
            ("macro", "NLMSG_SPACE(0)", 16, 24),
            ("value", "NLMSG_HDRLEN", 16, 20),
        },
    ),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
@proc_event_align
def test_one_change_gives_its_exact_findings(tmp_path: Path, change: str) -> None:
    header, pattern, replacement, expected = CHANGES[change]
    report = check_headers(BINDINGS, include_dirs=[tree(tmp_path, header, pattern, replacement)])
    assert rows(report.findings) == expected
    assert report.failed()
    assert str(tmp_path) in report.description


def test_findings_carry_the_reason(tmp_path: Path) -> None:
    include = tree(tmp_path, "linux/cn_proc.h", r"exit_code, exit_signal;", "exit_code, exit_sig;")
    report = check_headers(BINDINGS, include_dirs=[include])
    (gone,) = [f for f in report.findings if f.category == "missing-in-headers"]
    assert "has no member named 'exit_signal'" in gone.note
    (grown,) = [f for f in report.findings if f.category == "missing-in-binding"]
    assert grown.note == "C value: its offset"
    # The rest of the check still ran: every other field of exit_proc_event was compared.
    assert report.checked >= check_headers(BINDINGS).checked - 4


def test_removed_define_with_a_recorded_version_says_so(tmp_path: Path) -> None:
    include = tree(tmp_path, "linux/connector.h", r"#define CN_VSS_VAL[^\n]*\n", "")
    (gone,) = [f for f in check_headers(BINDINGS, include_dirs=[include]).findings if f.item == "CN_VSS_VAL"]
    assert gone.note.startswith("binding records Linux 3.10; ")
    assert "CN_VSS_VAL" in gone.note


def test_macro_findings_count_the_inputs(tmp_path: Path) -> None:
    include = tree(tmp_path, "linux/netlink.h", r"\(\(len\)\+NLMSG_ALIGNTO-1\)", "((len)+NLMSG_ALIGNTO)")
    report = check_headers(BINDINGS, include_dirs=[include], macro_inputs=[0, 1, 2, 3, 4])
    notes = {f.item: f.note for f in report.findings if f.category == "macro"}
    assert notes == {
        "NLMSG_ALIGN(0)": "2 of 5 inputs differ",
        "NLMSG_LENGTH(0)": "5 of 5 inputs differ",
        "NLMSG_SPACE(0)": "5 of 5 inputs differ",
    }


@proc_event_align
def test_headers_with_the_linux_6_6_items_check_them(tmp_path: Path) -> None:
    """The installed cn_proc.h grown by hand to 6.6's items: they are compared, not noted."""
    if header_version() >= (6, 6):
        pytest.skip("the installed headers already have the Linux 6.6 items")
    include = tree(
        tmp_path, "linux/cn_proc.h", r"(PROC_EVENT_COREDUMP = )", r"PROC_EVENT_NONZERO_EXIT = 0x20000000,\n\t\1"
    )
    text = (include / "linux/cn_proc.h").read_text()
    grown = """
#define PROC_EVENT_ALL (PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_UID | PROC_EVENT_GID | \\
            PROC_EVENT_SID | PROC_EVENT_PTRACE | PROC_EVENT_COMM | PROC_EVENT_NONZERO_EXIT | \\
            PROC_EVENT_COREDUMP | PROC_EVENT_EXIT)
struct proc_input {
    enum proc_cn_mcast_op mcast_op;
    enum what event_type;
};
static inline enum what valid_event(enum what ev_type)
{
    return (enum what)(ev_type & PROC_EVENT_ALL);
}
#endif"""
    (include / "linux/cn_proc.h").write_text(text[: text.rindex("#endif")] + grown + "\n")
    # Headers with these items are Linux 6.6 headers: older ones would contradict ADDED_IN.
    (include / "linux/version.h").write_text(f"#define LINUX_VERSION_CODE {(6 << 16) + (6 << 8)}\n")
    report = check_headers(BINDINGS, include_dirs=[include])
    assert rows(report.findings) == set()
    assert {f.item for f in report.findings if f.category == "newer"} <= {"NL_ATTR_TYPE_SINT", "NL_ATTR_TYPE_UINT"}

    # valid_event is really compared: a wrong Python version of it is found.
    wrong = Binding(**{**vars(BINDINGS[2]), "macro_functions": {"valid_event": lambda ev: ev}})
    found = rows(check_headers([*BINDINGS[:2], wrong], include_dirs=[include]).findings)
    assert found == {("macro", "valid_event(8)", 8, 0)}  # 8 is no event bit


# --- the library API on a project's own header and classes -------------------

POINT_H = """\
#ifndef POINT_H
#define POINT_H 1
#define POINT_MAX 10
#define POINT_NAME "point"
#define POINT_SCALE(x) ((x) * 2)
typedef unsigned int point_id_t;
enum point_kind { POINT_FLAT = -1, POINT_ROUND = 1 << 4, POINT_LAST };
struct point {
    int x;
    unsigned int y : 4, z : 4;
    union { int i; float f; };
    struct { char name[8]; } label;
    void (*callback)(struct point *p, int n);
    unsigned long long __attribute__((aligned(8))) stamp;
    __typeof__(unsigned short) small;
    _Static_assert(sizeof(int) == 4, "int");
    char tail[];
};
static inline int point_area(const struct point *p) { return p->x * 2; }
extern int point_count(void);
#endif
"""


class point__u(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("f", ctypes.c_float)]


class point__label(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 8)]


class point(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [
        ("x", ctypes.c_int),
        ("y", ctypes.c_uint, 4),
        ("z", ctypes.c_uint, 4),
        ("u", point__u),
        ("label", point__label),
        ("callback", ctypes.c_void_p),
        ("stamp", ctypes.c_ulonglong),
        ("small", ctypes.c_ushort),
        ("tail", ctypes.c_char * 0),
    ]


def point_binding(**changes: object) -> Binding:
    fields: dict[str, object] = {
        "header": "point.h",
        "types": (point,),
        "constants": {"POINT_MAX": 10, "POINT_FLAT": -1, "POINT_ROUND": 16, "POINT_LAST": 17},
        "macro_functions": {"POINT_SCALE": lambda x: x * 2},
        "not_mirrored": {"POINT_NAME": "a string", "point_area": "reads a struct point *", "point_count": "a function"},
    }
    return Binding(**{**fields, **changes})  # type: ignore[arg-type]


@proc_event_align
def test_a_projects_own_header(tmp_path: Path) -> None:
    (tmp_path / "point.h").write_text(POINT_H)
    report = check_headers([point_binding()], include_dirs=[tmp_path], macro_inputs=range(100))
    assert report.version is None or report.version == "{}.{}".format(*header_version())
    assert rows(report.findings) == {("missing-in-binding", "typedef point_id_t", None, None)}
    assert {f.item for f in report.findings if f.category == "not-mirrored"} == {
        "POINT_NAME",
        "point_area",
        "point_count",
    }
    assert report.checked > 100


@proc_event_align
def test_a_projects_own_header_with_mistakes(tmp_path: Path) -> None:
    (tmp_path / "point.h").write_text(POINT_H)
    binding = point_binding(
        constants={"POINT_MAX": 11, "POINT_FLAT": -1, "POINT_ROUND": 16, "POINT_LAST": 17, "POINT_GONE": 1},
        macro_functions={"POINT_SCALE": lambda x: x * 3, "POINT_NOPE": lambda x: x},
    )
    found = rows(check_headers([binding], include_dirs=[tmp_path], discover=False, macro_inputs=[1, 2]).findings)
    assert found == {
        ("value", "POINT_MAX", 11, 10),
        ("macro", "POINT_SCALE(1)", 3, 2),
        ("missing-in-headers", "POINT_GONE", 1, None),
        ("missing-in-headers", "POINT_NOPE", None, None),
    }


def test_without_discovery_only_the_binding_is_checked(tmp_path: Path) -> None:
    """ctest's way: a field the headers lack is isolated from the compiler's
    diagnostics, and everything else is still compared."""
    cb_id = type("cb_id", (ctypes.Structure,), {"_fields_": [("idx", ctypes.c_uint32), ("vall", ctypes.c_uint32)]})
    binding = Binding("linux/connector.h", (cb_id,), {"CN_IDX_PROC": 1, "CN_VAL_PROC": 2})
    report = check_headers([binding], discover=False)
    assert rows(report.findings) == {
        ("missing-in-headers", "struct cb_id.vall", 4, None),
        ("value", "CN_VAL_PROC", 2, 1),
    }
    assert report.checked == 2 + 3 + 2  # cb_id size and align, idx offset/size/sign, two values


def test_check_errors() -> None:
    with pytest.raises(CheckError, match="no C compiler: 'no-such-cc' not found"):
        check_headers(BINDINGS, cc="no-such-cc")
    with pytest.raises(CheckError, match="include directory not found"):
        check_headers(BINDINGS, include_dirs=["/no/such/dir"])
    with pytest.raises(CheckError, match=r"headers not found: linux/netlink\.h"):
        check_headers(BINDINGS, cc=f"{compiler()} -nostdinc")


def test_headers_that_do_not_compile(tmp_path: Path) -> None:
    include = tree(tmp_path, "linux/connector.h", r"struct cb_id \{", "struct cb_id { garbage")
    with pytest.raises(CheckError, match=r"the headers do not compile: .*connector\.h:\d+: "):
        check_headers(BINDINGS, include_dirs=[include])


def test_every_category_is_documented() -> None:
    assert set(CATEGORIES) >= {"size", "align", "offset", "signedness", "length", "value", "newer"}
    for severity, meaning in CATEGORIES.values():
        assert severity in ("mismatch", "note", "info")
        assert meaning


# --- the compiler driver: a compile-only probe -------------------------------


def driver(**kwargs: Any) -> Compiler:
    return cc_driver(compiler(), **kwargs)


def cross(triple: str) -> Compiler:
    """A Debian cross-compiler with its target's headers, or skip."""
    if shutil.which(f"{triple}-gcc") is None:
        pytest.skip(f"no {triple}-gcc (Debian: gcc-{triple})")
    cc = cc_driver(target=triple)
    try:
        evaluate(cc, ["linux/types.h"], [Query("u32", "sizeof(__u32)")])
    except CheckError as e:
        pytest.skip(f"no headers for {triple} (Debian: linux-libc-dev-<arch>-cross, libc6-dev-<arch>-cross): {e}")
    return cc


def predefined(cc: Compiler) -> dict[str, str]:
    """The compiler's predefined macros (``-dM -E``): the truth the probe's values are held to."""
    done = subprocess.run(
        [*cc.argv, "-dM", "-E", "-x", "c", "-"], input=b"", capture_output=True, check=True, timeout=60
    )
    macros: dict[str, str] = {}
    for line in done.stdout.decode().splitlines():
        _, name, *value = line.split(" ", 2)
        macros[name] = value[0] if value else ""
    return macros


TARGET_QUERIES = [
    Query("long", "sizeof(long)"),
    Query("pointer", "sizeof(void *)"),
    Query("big", "__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__"),
    Query("long long in a struct", "offsetof(struct { char c; long long x; }, x)"),
    Query("wide", "0x0102030405060708ULL"),
    Query("negative", "-0x123456789LL"),
    Query("proc_event", "sizeof(struct proc_event)"),
]


@pytest.mark.parametrize(
    ("triple", "long", "big", "long_long"),
    [("s390x-linux-gnu", 8, 1, 8), ("i686-linux-gnu", 4, 0, 4), ("x86_64-linux-gnu", 8, 0, 8)],
    ids=["s390x-big-endian", "i686-32-bit", "x86_64"],
)
def test_cross_compiler_values_are_the_targets(triple: str, long: int, big: int, long_long: int) -> None:
    """The values are read from the target's object file in its byte order: they
    are what the cross-compiler computes, not what this host would."""
    cc = cross(triple)
    macros = predefined(cc)
    done = evaluate(cc, ["linux/cn_proc.h"], TARGET_QUERIES)
    assert done.failed == {}
    values = dict(zip((q.item for q in TARGET_QUERIES), done.values, strict=True))
    assert values["long"] == int(macros["__SIZEOF_LONG__"]) == long
    assert values["pointer"] == int(macros["__SIZEOF_POINTER__"])
    assert values["big"] == (macros["__BYTE_ORDER__"] == "__ORDER_BIG_ENDIAN__") == big
    assert values["long long in a struct"] == long_long
    assert values["wide"] == 0x0102030405060708
    assert values["negative"] == -0x123456789
    assert values["proc_event"] == 40  # the same on every target: its fields are fixed-width


@pytest.mark.parametrize("triple", ["s390x-linux-gnu", "i686-linux-gnu"])
def test_cross_compiler_folds_a_static_inline_function(tmp_path: Path, triple: str) -> None:
    cc = cross(triple)
    (tmp_path / "fold.h").write_text("static inline long fold_twice(long x) { return 2 * x - 1; }\n")
    queries = [Query("fold_twice", f"fold_twice({n})") for n in (0, 5, -7, 1 << 20)]
    done = evaluate(cc, ["fold.h"], queries, include_dirs=[tmp_path])
    assert (done.values, done.failed) == ((-1, 9, -15, (1 << 21) - 1), {})


def test_one_failing_item_fails_alone(tmp_path: Path) -> None:
    """1/0, an unknown member, a string, an address, an extern call and a broken
    expression each fail their own item, with a one-line reason; the rest is read."""
    (tmp_path / "mixed.h").write_text(
        "struct mixed { int a; };\nextern int mixed_var;\nextern int mixed_call(int);\n"
        "static inline int mixed_fold(int x) { return x + 1; }\n"
    )
    queries = [
        Query("ok", "sizeof(struct mixed)"),
        Query("div", "1/0"),
        Query("member", "offsetof(struct mixed, b)"),
        Query("string", '"abc"'),
        Query("address", "(unsigned long)&mixed_var"),
        Query("call", "mixed_call(1)"),
        Query("broken", "1) + (2"),
        Query("comment", "1 /* x */"),
        Query("fold", "mixed_fold(41)"),
        Query("ok", "_Alignof(struct mixed)"),
    ]
    done = evaluate(driver(), ["mixed.h"], queries, include_dirs=[tmp_path])
    assert set(done.failed) == {"div", "member", "string", "address", "call", "broken", "comment"}
    assert "has no member named 'b'" in done.failed["member"]
    assert "not a constant" in done.failed["div"]
    assert "relocation" in done.failed["address"] or "not a constant" in done.failed["address"]
    assert all("\n" not in msg for msg in done.failed.values())
    assert done.values == (4, None, None, None, None, None, None, None, 42, 4)


def test_foreign_data_in_the_probe_section_is_refused(tmp_path: Path) -> None:
    (tmp_path / "forge.h").write_text(
        'static const unsigned long long forged[] __attribute__((section(".kstructs_probe"), used)) = { 7, 7 };\n'
    )
    with pytest.raises(CheckError, match=r"^the \.kstructs_probe section of the object file is not the probe's"):
        evaluate(driver(), ["forge.h"], [Query("x", "1")], include_dirs=[tmp_path])


def test_header_groups_are_separate_programs() -> None:
    """glibc's and the kernel's struct termios cannot share a program: each group is its own."""
    queries = [Query("termios", "sizeof(struct termios)")]
    with pytest.raises(CheckError, match="do not compile"):
        evaluate(driver(), ["termios.h", "asm/termbits.h"], queries)
    glibc, kernel = evaluate_groups(driver(), [Group(["termios.h"], queries), Group(["asm/termbits.h"], queries)])
    assert glibc.failed == kernel.failed == {}
    assert glibc.values[0] != kernel.values[0]
    assert None not in (glibc.values[0], kernel.values[0])


def test_driver_errors() -> None:
    with pytest.raises(CheckError, match=r"^not a target triple: 'x y'$"):
        cc_driver(target="x y")
    with pytest.raises(CheckError, match=r"^no C compiler for no-such-linux-gnu: 'no-such-linux-gnu-gcc' not found"):
        cc_driver(target="no-such-linux-gnu")
    with pytest.raises(CheckError, match="timeout must be a positive number"):
        cc_driver(compiler(), timeout=0)
    with pytest.raises(CheckError, match="not a macro definition"):
        cc_driver(compiler(), defines=["1X=2"])
